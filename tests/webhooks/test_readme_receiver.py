"""The README's webhook receiver, run as written against real deliveries, so it cannot rot."""

from __future__ import annotations

import re
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import WebhookVerificationError

from batches import webhooks
from batches.models import WebhookDelivery
from tests.webhooks.helpers import finished_batch, only_delivery

pytestmark = pytest.mark.django_db

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- webhook-receiver: tests/webhooks/test_readme_receiver.py runs this code -->"
D = WebhookDelivery.Status


def receiver_code() -> str:
    """Return the Python block that follows the marker in the README."""
    text = README.read_text()
    assert MARKER in text, "the README's webhook receiver lost its marker"
    block = re.match(r"\s*```python\n(.*?)\n```", text[text.index(MARKER) + len(MARKER) :], re.S)
    assert block, "the marker must be followed by a ```python block"
    return block[1]


@pytest.fixture
def readme_receiver(account, monkeypatch, settings):
    """Run the README's receiver with the account's secret; yield its module and URL."""
    secret = webhooks.webhook_secret_rotate(account=account)
    monkeypatch.setenv("BATCHSITE_WEBHOOK_SECRET", secret)
    module = {"__name__": "readme_receiver"}
    exec(compile(receiver_code(), str(README), "exec"), module)
    server = module["HTTPServer"](("127.0.0.1", 0), module["Receiver"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["127.0.0.1"]
    try:
        yield module, f"http://127.0.0.1:{server.server_port}/hook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_readme_receiver__accepts_a_signed_delivery(account, readme_receiver, capfd):
    _, url = readme_receiver

    batch = finished_batch(account, url)

    delivery = only_delivery(batch)
    assert (delivery.status, delivery.last_status_code) == (D.SUCCEEDED, 204)
    printed = capfd.readouterr().out
    assert f"{delivery.pk} batch.finished {batch.pk}" in printed


def test_readme_receiver__accepts_the_previous_secret_during_the_overlap(account, readme_receiver):
    _, url = readme_receiver
    webhooks.webhook_secret_rotate(account=account)  # the receiver still has the old one

    batch = finished_batch(account, url)

    assert only_delivery(batch).last_status_code == 204


def test_readme_receiver__refuses_a_delivery_signed_with_another_secret(
    account, readme_receiver, settings
):
    _, url = readme_receiver
    settings.BATCHSITE_WEBHOOK_SECRET_OVERLAP_SECONDS = 0
    webhooks.webhook_secret_rotate(account=account)

    batch = finished_batch(account, url)

    delivery = only_delivery(batch)
    assert (delivery.status, delivery.last_status_code) == (D.PENDING, 401)


def test_readme_receiver__verify_refuses_old_timestamps_and_changed_bodies(
    account, readme_receiver
):
    module, url = readme_receiver
    delivery = only_delivery(finished_batch(account, url))
    account.refresh_from_db()
    body = delivery.body.encode()
    verify = module["webhook"].verify

    def headers(seconds_ago: float = 0) -> dict:
        sent = timezone.now() - timedelta(seconds=seconds_ago)
        return webhooks.delivery_headers(delivery, account, sent)

    assert verify(body, headers())["id"] == str(delivery.pk)
    assert verify(body, headers(240))["id"] == str(delivery.pk)
    for refused in (headers(400), headers(-400)):
        with pytest.raises(WebhookVerificationError, match="timestamp"):
            verify(body, refused)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(body + b" ", headers())
    other = {**headers(), "webhook-id": str(uuid.uuid4())}
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(body, other)
    with pytest.raises(WebhookVerificationError, match="headers"):
        verify(body, {})
