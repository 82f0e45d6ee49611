"""Helpers for webhook tests: batches that end while a receiver listens, and signature checks
made with the `standardwebhooks` package, as a receiver would."""

from __future__ import annotations

import json

from django.test import TestCase
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
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


def signatures(request: Request) -> list[str]:
    """Return the `v1,<base64>` signatures of a delivery request, in their order."""
    return request.headers["webhook-signature"].split(" ")


def signed_by(secret: str | bytes, request: Request) -> bool:
    """Return True if the Standard Webhooks library verifies the request with `secret`.

    A secret the library cannot even read (not base64 after `whsec_`) verifies nothing.
    """
    try:
        Webhook(secret).verify(request.get_data(), dict(request.headers))
    except (WebhookVerificationError, ValueError):  # binascii.Error is a ValueError
        return False
    return True


def body_of(request: Request) -> dict:
    """Return the JSON body of a delivery request."""
    return json.loads(request.get_data())


def only_delivery(batch: Batch) -> WebhookDelivery:
    """Return the batch's one delivery, fresh from the database."""
    (delivery,) = WebhookDelivery.objects.filter(batch_id=batch.pk)
    return delivery
