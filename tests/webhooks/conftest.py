"""Webhook test fixtures: a real loopback receiver that webhooks may reach.

Deliveries go to pytest-httpserver on loopback, reached as `localhost`, which the
outbound allow-list names explicitly (so its private address is allowed). Unit tests run
django-q2 tasks inline, so a batch that ends posts its webhook before the test goes on.
"""

from __future__ import annotations

import pytest
from pytest_httpserver import HTTPServer

from tests.webhooks.helpers import HOOK


@pytest.fixture
def receiver(httpserver: HTTPServer, settings) -> HTTPServer:
    """A loopback HTTP server the outbound guard lets webhooks reach."""
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]
    return httpserver


@pytest.fixture
def hook_ok(receiver: HTTPServer) -> str:
    """Answer every POST to /hook with 200; return its URL."""
    receiver.expect_request(HOOK, method="POST").respond_with_data("thanks", status=200)
    return receiver.url_for(HOOK)
