"""Helpers for webhook tests: batches that end while a receiver listens, and signature checks."""

from __future__ import annotations

import hashlib
import hmac
import json

from django.test import TestCase
from pytest_httpserver import HTTPServer
from werkzeug import Request

from batches import services
from batches.models import Account, Batch, WebhookDelivery

HOOK = "/hook"


def run_on_commit():
    """Run what the block queues on commit (tasks run inline in unit tests), nested ones too."""
    return TestCase.captureOnCommitCallbacks(execute=True)


def finished_batch(
    account: Account,
    url: str,
    *,
    items: list | None = None,
    label: str = "",
    metadata: dict | None = None,
    **options,
) -> Batch:
    """Create, commit and run a batch whose callback_url is `url`; return it once it ended."""
    with run_on_commit():
        batch, _ = services.batch_create(
            account=account,
            actor="test",
            label=label,
            metadata=metadata,
            items=items or [{"payload": {"n": 1}}, {"payload": {"n": 2}}],
            options={"callback_url": url, **options},
            commit=True,
        )
    return Batch.objects.get(pk=batch.pk)


def posts(server: HTTPServer, path: str = HOOK) -> list[Request]:
    """Return the requests the receiver got at `path`, oldest first."""
    return [request for request, _ in server.log if request.path == path]


def signatures(header: str) -> tuple[int, list[str]]:
    """Split a Batchsite-Signature header into its timestamp and its v1 signatures."""
    fields = [part.split("=", 1) for part in header.split(",")]
    timestamps = [int(value) for name, value in fields if name == "t"]
    assert len(timestamps) == 1, header
    return timestamps[0], [value for name, value in fields if name == "v1"]


def signed_by(secret: str, request: Request) -> bool:
    """Return True if one v1 signature of the request is HMAC-SHA256("t.body") under secret."""
    timestamp, values = signatures(request.headers["Batchsite-Signature"])
    signed = f"{timestamp}.".encode() + request.get_data()
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for value in values)


def body_of(request: Request) -> dict:
    """Return the JSON body of a delivery request."""
    return json.loads(request.get_data())


def only_delivery(batch: Batch) -> WebhookDelivery:
    """Return the batch's one delivery, fresh from the database."""
    (delivery,) = WebhookDelivery.objects.filter(batch_id=batch.pk)
    return delivery
