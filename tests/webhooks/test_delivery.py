"""Webhook deliveries posted to a real loopback receiver: signing, body, retries, refusals."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from werkzeug import Response

from batches import services, webhooks
from batches.engine import sweep
from batches.models import Batch, WebhookAttempt, WebhookDelivery
from tests.factories import BatchFactory, WebhookDeliveryFactory
from tests.helpers import kinds
from tests.webhooks.helpers import (
    HOOK,
    body_of,
    finished_batch,
    only_delivery,
    posts,
    run_on_commit,
    signatures,
    signed_by,
)

pytestmark = pytest.mark.django_db

S = Batch.Status
D = WebhookDelivery.Status
SUMMARY_FIELDS = [
    "id", "number", "account", "type", "label", "metadata", "status", "counts", "progress",
    "error_count", "created_at", "committed_at", "started_at", "finished_at",
]  # fmt: skip


def due_now(delivery: WebhookDelivery) -> None:
    """Let time pass until the delivery's next try is due (by moving the try, not the clock)."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def answers(*statuses: int):
    """Return a handler answering the given statuses in turn (the last one from then on)."""
    queue = list(statuses)

    def handler(request):
        status = queue.pop(0) if len(queue) > 1 else queue[0]
        return Response(f"answer {status}", status=status)

    return handler


def refused_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- one delivery, signed ------------------------------------------------------------------------


def test_deliver__finished_batch_posts_one_signed_event(account, receiver, hook_ok, client_a):
    secret = webhooks.webhook_secret_rotate(account=account)
    before = int(time.time())

    batch = finished_batch(account, hook_ok, label="nightly", metadata={"run": 7})

    after = int(time.time())
    (request,) = posts(receiver)
    delivery = only_delivery(batch)
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "batchsite-webhooks"
    assert request.headers["webhook-id"] == str(delivery.pk)
    assert before <= int(request.headers["webhook-timestamp"]) <= after
    assert len(signatures(request)) == 1
    assert signatures(request)[0].startswith("v1,")
    assert signed_by(secret, request)
    assert not signed_by(webhooks.webhook_secret_rotate(account=account), request)
    assert not [name for name, _ in request.headers.items() if name.startswith("Batchsite")]

    raw = request.get_data(as_text=True)
    body = json.loads(raw)
    assert raw == json.dumps(body, separators=(",", ":"), ensure_ascii=False)  # compact
    assert raw == delivery.body
    assert body["id"] == str(delivery.pk)
    assert body["type"] == body["event"] == "batch.finished"
    assert body["created_at"]
    api = client_a.get(f"/api/v1/batches/{batch.pk}/").json()
    assert body["batch"] == {name: api[name] for name in SUMMARY_FIELDS}
    assert body["batch"]["status"] == "finished"
    assert body["batch"]["counts"]["succeeded"] == 2
    assert body["batch"]["metadata"] == {"run": 7}

    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (D.SUCCEEDED, 1, 200)
    assert delivery.delivered_at is not None
    assert delivery.next_attempt_at is None
    (attempt,) = delivery.attempt_log.all()
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 200, "")
    assert attempt.response_excerpt == "thanks"
    assert kinds(batch)[-2:] == ["finished", "webhook_delivered"]


def test_deliver__during_the_overlap_both_secrets_sign(account, receiver, hook_ok, settings):
    old = webhooks.webhook_secret_rotate(account=account)
    new = webhooks.webhook_secret_rotate(account=account)

    finished_batch(account, hook_ok)

    (request,) = posts(receiver)
    assert len(signatures(request)) == 2
    assert signed_by(new, request)
    assert signed_by(old, request)


def test_deliver__after_the_overlap_only_the_new_secret_signs(account, receiver, hook_ok, settings):
    settings.BATCHSITE_WEBHOOK_SECRET_OVERLAP_SECONDS = 0
    old = webhooks.webhook_secret_rotate(account=account)
    new = webhooks.webhook_secret_rotate(account=account)

    finished_batch(account, hook_ok)

    (request,) = posts(receiver)
    assert len(signatures(request)) == 1
    assert signed_by(new, request)
    assert not signed_by(old, request)


def test_deliver__account_without_a_secret_is_sent_unsigned(account, receiver, hook_ok):
    assert not account.webhook_secret

    batch = finished_batch(account, hook_ok)

    (request,) = posts(receiver)
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == str(only_delivery(batch).pk)
    assert body_of(request)["type"] == "batch.finished"
    assert body_of(request)["batch"]["id"] == str(batch.pk)
    assert only_delivery(batch).status == D.SUCCEEDED


def test_batch_ended__no_callback_url_makes_no_delivery(account, receiver, hook_ok):
    with run_on_commit():
        batch, _ = services.batch_create(
            account=account, actor="test", items=[{"payload": {}}], commit=True
        )

    assert Batch.objects.get(pk=batch.pk).status == S.FINISHED
    assert not WebhookDelivery.objects.exists()
    assert posts(receiver) == []


# --- every way a batch ends ----------------------------------------------------------------------


def _open(account, url, **options) -> Batch:
    batch, _ = services.batch_create(
        account=account,
        actor="test",
        items=[{"payload": {"n": 1}}, {"payload": {"fail": True}}],
        options={"callback_url": url, **options},
    )
    return batch


def _commit(batch):
    services.batch_commit(batch=batch, actor="test")


def _commit_held_then_cancel(batch):
    Batch.objects.filter(pk=batch.pk).update(not_before=timezone.now() + timedelta(hours=1))
    services.batch_commit(batch=batch, actor="test")
    services.batch_cancel(batch=batch, actor="test")


ENDINGS = {
    "finished": ({}, _commit),
    "stopped": ({"stop_on_error": True}, _commit),
    "failed_atomic": ({"atomic": True}, _commit),
    "cancelled_uncommitted": ({}, lambda batch: services.batch_cancel(batch=batch, actor="t")),
    "cancelled_committed": ({}, _commit_held_then_cancel),
    "expired": ({}, lambda batch: services.batch_expire(batch=batch, actor="t", reason="ttl")),
    "failed_source": (
        {},
        lambda batch: services.batch_fail(batch=batch, code="x", message="unreadable", actor="t"),
    ),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_batch_ended__every_terminal_state_notifies_once(account, receiver, hook_ok, ending):
    options, end = ENDINGS[ending]
    batch = _open(account, hook_ok, **options)

    with run_on_commit():
        end(batch)

    batch.refresh_from_db()
    assert batch.is_terminal
    assert ending.split("_")[0] == batch.status
    (request,) = posts(receiver)
    assert request.headers["webhook-id"] == str(only_delivery(batch).pk)
    body = body_of(request)
    assert body["event"] == f"batch.{batch.status}"
    assert body["batch"]["status"] == batch.status
    assert body["batch"]["counts"] == batch.counts()
    delivery = only_delivery(batch)
    assert (delivery.event, delivery.status) == (f"batch.{batch.status}", D.SUCCEEDED)


def test_batch_ended__a_rerun_that_ends_again_sends_a_new_delivery(account, receiver, hook_ok):
    batch = finished_batch(account, hook_ok)

    with run_on_commit():
        services.batch_rerun(batch=batch, which="all", actor="test")

    first, second = posts(receiver)
    assert first.headers["webhook-id"] != second.headers["webhook-id"]
    assert body_of(first)["event"] == body_of(second)["event"] == "batch.finished"
    assert body_of(second)["batch"]["committed_at"] != body_of(first)["batch"]["committed_at"]
    assert list(WebhookDelivery.objects.filter(batch=batch).values_list("status", flat=True)) == [
        D.SUCCEEDED,
        D.SUCCEEDED,
    ]


# --- retries ------------------------------------------------------------------------------------


def test_deliver__500_is_retried_by_the_sweep_until_it_lands(account, receiver, settings):
    receiver.expect_request(HOOK, method="POST").respond_with_handler(answers(500, 200))
    started = timezone.now()

    batch = finished_batch(account, receiver.url_for(HOOK))

    delivery = only_delivery(batch)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (D.PENDING, 1, 500)
    assert "500" in delivery.last_error
    base = timedelta(seconds=settings.BATCHSITE_WEBHOOK_BACKOFF_SECONDS)
    assert started + base / 2 <= delivery.next_attempt_at <= timezone.now() + base
    assert sweep.sweep_run()["webhooks"] == 0  # not due yet: nothing is posted
    assert len(posts(receiver)) == 1

    due_now(delivery)
    assert sweep.sweep_run()["webhooks"] == 1

    first, second = posts(receiver)
    assert first.get_data() == second.get_data()
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(delivery.pk)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (D.SUCCEEDED, 2, 200)
    assert delivery.last_error == ""
    log = list(delivery.attempt_log.values_list("number", "status_code"))
    assert log == [(1, 500), (2, 200)]
    assert sweep.sweep_run()["webhooks"] == 0


def test_deliver__gives_up_when_the_next_try_would_miss_the_window(account, receiver, settings):
    settings.BATCHSITE_WEBHOOK_RETRY_SECONDS = 2
    receiver.expect_request(HOOK, method="POST").respond_with_data("down", status=503)

    batch = finished_batch(account, receiver.url_for(HOOK))

    delivery = only_delivery(batch)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (D.FAILED, 1, None)
    assert delivery.last_error.startswith("gave up after 1 attempt(s)")
    assert "503" in delivery.last_error
    assert kinds(batch)[-1] == "webhook_failed"
    assert sweep.sweep_run()["webhooks"] == 0
    assert len(posts(receiver)) == 1


def test_deliver__a_try_after_the_window_ended_is_the_last(account, receiver):
    receiver.expect_request(HOOK, method="POST").respond_with_data("down", status=500)
    batch = finished_batch(account, receiver.url_for(HOOK))
    delivery = only_delivery(batch)
    assert delivery.status == D.PENDING

    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        give_up_at=timezone.now() - timedelta(seconds=1)
    )
    due_now(delivery)
    sweep.sweep_run()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (D.FAILED, 2)
    assert len(posts(receiver)) == 2


def test_backoff_seconds__doubles_from_the_base_up_to_an_hour_with_jitter(settings):
    settings.BATCHSITE_WEBHOOK_BACKOFF_SECONDS = 30

    for attempts in range(1, 40):
        delay = min(3600, 30 * 2 ** (attempts - 1))
        assert delay / 2 <= webhooks.backoff_seconds(attempts) <= delay

    assert len({webhooks.backoff_seconds(3) for _ in range(20)}) > 1


def test_deliver__timeout_is_an_error_that_is_retried(account, receiver, settings):
    settings.BATCHSITE_WEBHOOK_TIMEOUT = 0.2
    release = threading.Event()

    def stuck(request):
        release.wait(30)
        return Response("late")

    receiver.expect_request(HOOK, method="POST").respond_with_handler(stuck)
    try:
        batch = finished_batch(account, receiver.url_for(HOOK))
    finally:
        release.set()

    delivery = only_delivery(batch)
    assert (delivery.status, delivery.last_status_code) == (D.PENDING, None)
    assert delivery.last_error == "timed out after 0.2s"
    (attempt,) = delivery.attempt_log.all()
    assert (attempt.status_code, attempt.error) == (None, "timed out after 0.2s")


def test_deliver__connection_refused_is_an_error_that_is_retried(account, settings):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["127.0.0.1"]

    batch = finished_batch(account, f"http://127.0.0.1:{refused_port()}/hook")

    delivery = only_delivery(batch)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (D.PENDING, 1, None)
    assert delivery.last_error.startswith("ConnectError")


def test_deliver__an_attempt_whose_worker_died_is_marked_and_tried_again(
    account, receiver, hook_ok
):
    batch = BatchFactory(account=account, status=S.FINISHED, callback_url=hook_ok)
    delivery = WebhookDeliveryFactory(
        batch=batch,
        attempts=1,
        next_attempt_at=timezone.now() - timedelta(seconds=1),  # its lease ran out
    )
    WebhookAttempt.objects.create(delivery=delivery, number=1)

    assert webhooks.deliver(delivery.pk) == "delivered"

    log = list(delivery.attempt_log.values_list("number", "status_code", "error"))
    assert log == [(1, None, webhooks.LOST_ATTEMPT), (2, 200, "")]


# --- the outbound guard --------------------------------------------------------------------------


def test_deliver__host_refused_at_delivery_time_fails_at_once(account, receiver, hook_ok, settings):
    batch = _open(account, hook_ok)
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["elsewhere.example"]

    with run_on_commit():
        services.batch_commit(batch=batch, actor="test")

    delivery = only_delivery(batch)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (D.FAILED, 1, None)
    assert delivery.last_error == (
        "refused: host 'localhost' is not in BATCHSITE_OUTBOUND_ALLOWED_HOSTS"
    )
    assert posts(receiver) == []
    assert kinds(batch)[-1] == "webhook_failed"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_deliver__a_redirect_is_never_followed(account, receiver, hook_ok, status):
    # Following one would send the signed delivery's headers (a GET for 301-303) to wherever
    # the receiver points, inside the allow-list or not.
    receiver.expect_request("/moved", method="POST").respond_with_data(
        "moved", status=status, headers={"Location": hook_ok}
    )

    batch = finished_batch(account, receiver.url_for("/moved"))

    delivery = only_delivery(batch)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        D.FAILED,
        1,
        status,
    )
    assert delivery.last_error.endswith(webhooks.NOT_FOLLOWED)
    assert f"answered {status}" in delivery.last_error
    assert len(posts(receiver, "/moved")) == 1
    assert [request.path for request, _ in receiver.log] == ["/moved"]


# --- the sweep and the lease ---------------------------------------------------------------------


def test_deliveries_retry_due__hands_out_only_pending_deliveries_that_are_due(
    account, receiver, hook_ok
):
    batch = BatchFactory(account=account, status=S.FINISHED, callback_url=hook_ok)
    now = timezone.now()
    window = now + timedelta(hours=1)

    def delivery(status, next_attempt_at):
        return WebhookDeliveryFactory(
            batch=batch,
            body=json.dumps({"status": status}),
            status=status,
            next_attempt_at=next_attempt_at,
            give_up_at=window,
        )

    due = delivery(D.PENDING, now - timedelta(seconds=5))
    delivery(D.PENDING, now + timedelta(minutes=5))
    delivery(D.SUCCEEDED, None)
    delivery(D.FAILED, None)

    assert webhooks.deliveries_retry_due(timezone.now()) == 1

    (request,) = posts(receiver)
    assert request.headers["webhook-id"] == str(due.pk)
    due.refresh_from_db()
    assert due.status == D.SUCCEEDED


def _in_flight(account, receiver):
    """Start a batch in a thread whose webhook try hangs in the receiver until released.

    Returns the thread, the event that releases the receiver, and the batch's delivery.
    """
    arrived, release = threading.Event(), threading.Event()

    def slow(request):
        arrived.set()
        release.wait(60)
        return Response("ok")

    receiver.expect_request(HOOK, method="POST").respond_with_handler(slow)
    ended: list[Batch] = []

    def end_batch():
        try:
            ended.append(finished_batch(account, receiver.url_for(HOOK)))
        finally:
            connection.close()

    thread = threading.Thread(target=end_batch)
    thread.start()
    assert arrived.wait(60), "the first try never reached the receiver"
    return thread, release, ended, WebhookDelivery.objects.get()


@pytest.mark.django_db(transaction=True)
def test_deliver__two_concurrent_calls_post_once(account, receiver):
    thread, release, ended, delivery = _in_flight(account, receiver)
    try:
        second = webhooks.deliver(delivery.pk)
        swept = webhooks.deliveries_retry_due(timezone.now())
    finally:
        release.set()
        thread.join(60)

    assert (second, swept) == ("not_due", 0)
    assert len(posts(receiver)) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (D.SUCCEEDED, 1)
    assert ended
    assert ended[0].status == S.FINISHED


@pytest.mark.django_db(transaction=True)
def test_delivery_redeliver__during_a_try_waits_for_it_instead_of_posting_twice(account, receiver):
    thread, release, _, delivery = _in_flight(account, receiver)
    try:
        # Its on-commit task runs at once here (no test transaction): the try holds the lease.
        redelivered = webhooks.delivery_redeliver(delivery=delivery, actor="test")
        again = webhooks.deliver(delivery.pk)
    finally:
        release.set()
        thread.join(60)

    assert redelivered.next_attempt_at > timezone.now()
    assert again == "not_due"
    assert len(posts(receiver)) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (D.SUCCEEDED, 1)
    assert delivery.give_up_at == redelivered.give_up_at
