"""Fixtures for the Python client's tests: a live server, an account's key, a client of it."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import httpx
import pytest
from django.core.management import call_command

from batches import services
from batchsite_client import Client
from jobs.signer import signer_paths


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that keeps every request it sent, to count and inspect them."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []
        self.on_request: Callable[[httpx.Request], object] = lambda request: None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.on_request(request)
        return super().handle_request(request)


@pytest.fixture
def api_key(account) -> str:
    """A raw API key of the `account` fixture's account."""
    _, raw = services.api_key_create(account=account, name="client tests")
    return raw


@pytest.fixture
def transport() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
def client(live_server, api_key, transport) -> Iterator[Client]:
    """A client of the live server, authenticated with the account's key."""
    with Client(live_server.url, api_key, timeout=60, transport=transport) as client:
        yield client


@pytest.fixture
def signer() -> None:
    """Make sure document.sign has a signer where the qcluster subprocess looks for it."""
    if not all(path.exists() for path in signer_paths()):
        call_command("createsigningkey", "--common-name", "Client Signer", stdout=io.StringIO())
