"""email.send in an atomic batch: every message prepared while it runs, all sent at the end."""

import pytest
from django.core import mail

from batches import services
from batches.models import Batch, BatchEvent, Item
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db


def mail_item(n: int, **extra) -> dict:
    payload = {"to": f"person{n}@example.com", "subject": f"Statement {n}", "text": "Hello"}
    return {"type": "email.send", "payload": {**payload, **extra}}


def run_atomic(items, capture) -> Batch:
    with capture(execute=True):
        batch, _ = services.batch_create(
            account=AccountFactory(),
            actor="test",
            items=items,
            options={"atomic": True},
            commit=True,
        )
    return Batch.objects.get(pk=batch.pk)


def test_email_atomic__all_messages_go_out_together_at_the_end(
    settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []

    batch = run_atomic([mail_item(n) for n in range(3)], django_capture_on_commit_callbacks)

    assert batch.status == Batch.Status.FINISHED
    assert sorted(message.to[0] for message in mail.outbox) == [
        "person0@example.com",
        "person1@example.com",
        "person2@example.com",
    ]
    assert set(Item.objects.filter(batch=batch).values_list("status", flat=True)) == {"succeeded"}
    assert all(item.result == {"sent": True} for item in Item.objects.filter(batch=batch))
    assert BatchEvent.objects.filter(batch=batch, kind="deferred_sent").count() == 1


def test_email_atomic__one_failed_item_sends_nothing(settings, django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    items = [mail_item(0), mail_item(1), {"type": "echo", "payload": {"fail": True}}, mail_item(3)]

    batch = run_atomic(items, django_capture_on_commit_callbacks)

    assert batch.status == Batch.Status.FAILED
    assert mail.outbox == []
    assert batch.succeeded_items == 0


def test_email_atomic__a_send_that_fails_at_the_end_fails_the_batch(
    settings, django_capture_on_commit_callbacks, monkeypatch
):
    from jobs.base import PermanentError
    from jobs.email_send import EmailSend

    def refuse(self, payloads):
        raise PermanentError("the mail server refused the batch", code="smtp_rejected")

    monkeypatch.setattr(EmailSend, "finalize_send", refuse)

    batch = run_atomic([mail_item(n) for n in range(2)], django_capture_on_commit_callbacks)

    assert batch.status == Batch.Status.FAILED
    assert batch.succeeded_items == 0
    assert batch.errors.filter(code="smtp_rejected").exists()
