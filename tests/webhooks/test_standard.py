"""Standard Webhooks signing, checked with the `standardwebhooks` package as a receiver would."""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from batches import webhooks
from batches.models import Account
from tests.webhooks.helpers import finished_batch, only_delivery, posts, signatures, signed_by

pytestmark = pytest.mark.django_db


def test_webhook_secret_rotate__makes_a_standard_secret(account):
    secret = webhooks.webhook_secret_rotate(account=account)

    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert 24 <= len(key) <= 64
    assert webhooks.secret_is_standard(secret)
    assert webhooks.secret_key(secret) == key


def test_deliver__verifies_with_the_secret_and_nothing_else(account, receiver, hook_ok):
    secret = webhooks.webhook_secret_rotate(account=account)

    batch = finished_batch(account, hook_ok)

    (request,) = posts(receiver)
    headers = dict(request.headers)
    body = request.get_data()
    event = Webhook(secret).verify(body, headers)
    assert event["id"] == headers["Webhook-Id"] == str(only_delivery(batch).pk)
    assert event["type"] == "batch.finished"
    with pytest.raises(WebhookVerificationError, match="signature"):
        Webhook(secret).verify(body.replace(b'"finished"', b'"failed"'), headers)
    with pytest.raises(WebhookVerificationError, match="signature"):
        Webhook("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()).verify(body, headers)


def test_delivery_headers__a_stale_timestamp_fails_verification(account, receiver, hook_ok):
    secret = webhooks.webhook_secret_rotate(account=account)
    delivery = only_delivery(finished_batch(account, hook_ok))
    account.refresh_from_db()

    stale = webhooks.delivery_headers(delivery, account, timezone.now() - timedelta(minutes=10))

    assert stale["webhook-id"] == str(delivery.pk)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(delivery.body, stale)


def test_deliver__after_a_rotation_new_and_old_secrets_both_verify(account, receiver, hook_ok):
    old = webhooks.webhook_secret_rotate(account=account)
    new = webhooks.webhook_secret_rotate(account=account)

    finished_batch(account, hook_ok)

    (request,) = posts(receiver)
    first, second = signatures(request)
    assert signed_by(new, request)
    assert signed_by(old, request)
    # The new secret's signature comes first.
    delivery_id, timestamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    body = request.get_data(as_text=True)
    assert first == webhooks.signature(new, delivery_id, int(timestamp), body)
    assert second == webhooks.signature(old, delivery_id, int(timestamp), body)


def test_deliver__a_secret_from_before_standard_webhooks_signs_with_its_own_bytes(
    account, receiver, hook_ok, client_a
):
    # As webhook_secret_rotate made them: whsec_ and secrets.token_urlsafe(32).
    legacy = "whsec_3q-Zk_0aV9xYtP2m-LwR8sN4uJ6hE1cB7dF5gKa"
    Account.objects.filter(pk=account.pk).update(
        webhook_secret=legacy, webhook_secret_rotated_at=timezone.now()
    )

    finished_batch(account, hook_ok)

    (request,) = posts(receiver)
    assert not webhooks.secret_is_standard(legacy)
    assert signed_by(legacy.encode(), request)
    assert not signed_by(legacy, request)
    assert client_a.get("/api/v1/account/").json()["webhook_secret_standard"] is False
