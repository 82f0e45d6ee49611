"""The events a batch asks for (`options.webhook_events`): validation, item.failed, progress.

Tasks run inline here, so a committed batch runs in the test's process; the engine with a
real qcluster is in test_cluster.py.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from batches import engine, services, webhooks
from batches.engine import claim
from batches.models import Batch, Chunk, Item, WebhookDelivery, WebhookProgress
from batches.timeline import items_move
from tests.helpers.api import assert_problem, create_batch, error_fields, row_counts
from tests.webhooks.helpers import body_of, finished_batch, posts, run_on_commit

pytestmark = pytest.mark.django_db

BATCHES = "/api/v1/batches/"


def failing_items(count: int, *, every: int) -> list[dict]:
    """Return `count` echo items, each `every`-th of which fails, with external ids."""
    return [
        {"external_id": f"x-{n}", "payload": {"fail": True} if n % every == 1 else {"n": n}}
        for n in range(count)
    ]


def events_of(batch: Batch) -> list[str]:
    return list(
        WebhookDelivery.objects.filter(batch=batch)
        .order_by("created_at")
        .values_list("event", flat=True)
    )


# --- options.webhook_events ---------------------------------------------------------------------


def test_batch_create__unknown_webhook_event_is_refused_at_its_place(client_a, hook_ok):
    before = row_counts()
    options = {"callback_url": hook_ok, "webhook_events": ["batch.progress", "batch.done", "x"]}

    response = client_a.post(BATCHES, {"options": options}, format="json")

    body = assert_problem(response, 400, "invalid")
    assert error_fields(body) == {"options.webhook_events[1]", "options.webhook_events[2]"}
    assert row_counts() == before


@pytest.mark.parametrize("value", ["batch.progress", [1], [None], {"a": 1}])
def test_batch_create__webhook_events_of_the_wrong_shape_are_refused(client_a, hook_ok, value):
    before = row_counts()
    options = {"callback_url": hook_ok, "webhook_events": value}

    response = client_a.post(BATCHES, {"options": options}, format="json")

    body = assert_problem(response, 400, "invalid")
    assert {field.split("[")[0] for field in error_fields(body)} == {"options.webhook_events"}
    assert row_counts() == before


def test_batch_create__webhook_events_need_a_callback_url(client_a):
    before = row_counts()

    response = client_a.post(
        BATCHES, {"options": {"webhook_events": ["item.failed"]}}, format="json"
    )

    body = assert_problem(response, 400, "invalid")
    assert error_fields(body) == {"options.webhook_events"}
    assert row_counts() == before


def test_batch_create__webhook_events_are_kept_and_default_to_the_end(client_a, hook_ok):
    asked = ["item.failed", "batch.progress", "item.failed", "batch.finished"]

    chosen = create_batch(client_a, options={"callback_url": hook_ok, "webhook_events": asked})
    default = create_batch(client_a, options={"callback_url": hook_ok})

    assert chosen["options"]["webhook_events"] == [
        "item.failed",
        "batch.progress",
        "batch.finished",
    ]
    assert default["options"]["webhook_events"] == ["batch.ended"]
    assert WebhookProgress.objects.filter(batch_id=chosen["id"]).exists()
    assert not WebhookProgress.objects.filter(batch_id=default["id"]).exists()


# --- which events are sent ----------------------------------------------------------------------


def test_batch_ended__not_sent_to_a_batch_that_asked_for_other_events(account, hook_ok, receiver):
    batch = finished_batch(account, hook_ok, webhook_events=["item.failed"])

    assert batch.status == Batch.Status.FINISHED
    assert events_of(batch) == []
    assert posts(receiver) == []


def test_batch_ended__sent_when_asked_for_by_its_own_name(account, hook_ok, receiver):
    batch = finished_batch(account, hook_ok, webhook_events=["batch.finished"])

    assert events_of(batch) == ["batch.finished"]


def test_items_failed__one_delivery_per_slice_lists_exactly_the_failed_items(
    account, hook_ok, receiver
):
    batch = finished_batch(
        account,
        hook_ok,
        items=failing_items(30, every=4),
        webhook_events=["item.failed", "batch.ended"],
    )

    failed = list(
        Item.objects.filter(batch=batch, status=Item.Status.FAILED)
        .order_by("index")
        .values("index", "external_id", "error_code", "error_message")
    )
    assert len(failed) == 8
    deliveries = WebhookDelivery.objects.filter(batch=batch, event="item.failed")
    listed = []
    for delivery in deliveries:
        body = json.loads(delivery.body)
        assert body["type"] == "item.failed"
        assert body["batch"]["id"] == str(batch.pk)
        assert body["items"]
        listed += body["items"]
    assert sorted(listed, key=lambda item: item["index"]) == failed
    assert all(item["error_code"] and item["error_message"] for item in listed)
    assert events_of(batch)[-1] == "batch.finished"
    assert len(posts(receiver)) == deliveries.count() + 1


def test_webhooks__a_batch_that_asked_for_nothing_more_gets_only_its_end(
    account, hook_ok, receiver
):
    batch = finished_batch(account, hook_ok, items=failing_items(30, every=3))

    assert batch.failed_items == 10
    assert events_of(batch) == ["batch.finished"]
    assert not WebhookProgress.objects.filter(batch=batch).exists()


def test_batch_progress__sent_while_running_at_most_once_per_period(
    account, hook_ok, receiver, settings
):
    settings.BATCHSITE_WEBHOOK_PROGRESS_SECONDS = 60
    batch = finished_batch(
        account, hook_ok, items=failing_items(20, every=5), webhook_events=["batch.progress"]
    )
    # A quick inline run: one progress delivery in its first period, none at the end.
    (progress,) = WebhookDelivery.objects.filter(batch=batch, event="batch.progress")
    body = json.loads(progress.body)
    assert body["type"] == "batch.progress"
    assert body["batch"]["status"] == "running"
    assert 0 < body["batch"]["progress"] <= 1
    assert WebhookProgress.objects.get(batch=batch).sent_at == progress.created_at

    # Running again (a rerun), within the period: nothing; past it: one more.
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.RUNNING)
    with run_on_commit():
        assert webhooks.batch_progress(batch_id=batch.pk) is None
    WebhookProgress.objects.filter(batch=batch).update(
        sent_at=timezone.now() - timedelta(seconds=60)
    )
    with run_on_commit():
        later = webhooks.batch_progress(batch_id=batch.pk)
        assert webhooks.batch_progress(batch_id=batch.pk) is None
    assert later is not None
    assert [body_of(r)["type"] for r in posts(receiver)] == ["batch.progress"] * 2


def test_batch_progress__not_sent_for_a_batch_that_does_not_run(account, hook_ok, receiver):
    batch = finished_batch(account, hook_ok, webhook_events=["batch.progress"])
    sent = WebhookDelivery.objects.filter(batch=batch).count()
    WebhookProgress.objects.filter(batch=batch).update(sent_at=None)

    with run_on_commit():
        assert webhooks.batch_progress(batch_id=batch.pk) is None

    assert WebhookDelivery.objects.filter(batch=batch).count() == sent
    assert len(posts(receiver)) == sent


# --- where deliveries are shown -----------------------------------------------------------------


def test_deliveries__api_dashboard_and_admin_show_the_new_events(
    account, hook_ok, receiver, client_a, staff, admin_client
):
    batch = finished_batch(
        account,
        hook_ok,
        items=failing_items(6, every=2),
        webhook_events=["batch.ended", "batch.progress", "item.failed"],
    )
    shown = {"batch.progress", "item.failed", "batch.finished"}
    assert set(events_of(batch)) == shown

    listed = client_a.get(f"{BATCHES}{batch.pk}/deliveries/").json()["results"]
    page = staff.get(reverse("dashboard:batch-detail", args=[batch.pk])).content.decode()
    admin = admin_client.get(
        reverse("admin:batches_webhookdelivery_changelist") + "?event=item.failed"
    ).content.decode()

    assert {row["event"] for row in listed} == shown
    assert {json.loads(row["body"])["type"] for row in listed} == shown
    for event in shown:
        assert f"<code>{event}</code>" in page
    assert "item.failed" in admin
    assert str(batch.number) in admin


# --- what the runner pays -----------------------------------------------------------------------


def _run_chunks_capturing(account, url: str, **options) -> tuple[Batch, list[str]]:
    """Commit a batch with failing items, run its chunks here; return it and the SQL run."""
    batch, _ = services.batch_create(
        account=account,
        actor="test",
        items=failing_items(40, every=4),
        options={"callback_url": url, **options},
        commit=True,
    )
    with CaptureQueriesContext(connection) as queries:
        for chunk_id in Chunk.objects.filter(batch=batch).values_list("pk", flat=True):
            engine.chunk_process(chunk_id=chunk_id)
    batch.refresh_from_db()
    assert batch.status == Batch.Status.FINISHED
    return batch, [query["sql"].lower() for query in queries.captured_queries]


def test_chunk_process__a_batch_that_asked_for_no_more_events_pays_nothing(account, hook_ok):
    _, sql = _run_chunks_capturing(account, hook_ok)

    assert not [q for q in sql if "webhookprogress" in q]
    # Its end, stored by finalize, and nothing else.
    assert len([q for q in sql if "webhookdelivery" in q]) == 1


def test_chunk_process__a_subscribed_batch_stores_its_events_as_it_runs(account, hook_ok):
    batch, sql = _run_chunks_capturing(
        account, hook_ok, webhook_events=["batch.progress", "item.failed"]
    )

    stored = events_of(batch)
    assert "batch.progress" in stored
    assert "item.failed" in stored
    assert [q for q in sql if "webhookprogress" in q]


def test_chunk_abandon__items_a_dying_worker_left_are_sent_as_failed(account, hook_ok):
    batch, _ = services.batch_create(
        account=account,
        actor="test",
        items=failing_items(6, every=100),
        options={"callback_url": hook_ok, "webhook_events": ["item.failed"]},
        commit=True,
    )
    chunk = Chunk.objects.get(batch=batch)
    assert engine.chunk_claim(chunk_id=chunk.pk, owner="dead-worker") is not None
    # Its first slice was taken (marked running) before the worker died.
    items_move(
        batch_id=batch.pk,
        from_statuses=[Item.Status.QUEUED],
        to_status=Item.Status.RUNNING,
        where=Q(index__lt=3),
    )
    Chunk.objects.filter(pk=chunk.pk).update(lease_expires_at=timezone.now() - timedelta(1))

    assert claim.chunk_abandon(chunk_id=chunk.pk, reason="the worker died 5 times") == 3

    (delivery,) = WebhookDelivery.objects.filter(batch=batch, event="item.failed")
    assert json.loads(delivery.body)["items"] == [
        {
            "index": n,
            "external_id": f"x-{n}",
            "error_code": "worker_lost",
            "error_message": "the worker died 5 times",
        }
        for n in range(3)
    ]
