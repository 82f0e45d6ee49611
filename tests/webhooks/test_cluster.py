"""Webhooks end to end: batches with a callback_url run on a real qcluster subprocess, and
each event they asked for reaches a loopback receiver, signed."""

from __future__ import annotations

import itertools
import json

import pytest

from batches import webhooks
from batches.models import Batch, Item, WebhookDelivery
from tests.conftest import wait_for
from tests.e2e.helpers import wait_terminal
from tests.helpers.api import create_batch
from tests.webhooks.helpers import HOOK, body_of, posts, signed_by

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def test_cluster_webhook__finished_batch_is_delivered_once_signed(
    client_a, account, cluster_factory, receiver
):
    receiver.expect_request(HOOK, method="POST").respond_with_data("ok")
    secret = webhooks.webhook_secret_rotate(account=account)
    cluster = cluster_factory(env={"BATCHSITE_OUTBOUND_ALLOWED_HOSTS": "localhost"})
    items = [{"payload": {"n": n}} for n in range(50)]

    created = create_batch(
        client_a, items=items, commit=True, options={"callback_url": receiver.url_for(HOOK)}
    )
    batch = wait_terminal(created["id"], cluster)

    def delivered():
        return WebhookDelivery.objects.filter(batch=batch, status="succeeded").first()

    try:
        delivery = wait_for(delivered, timeout=60)
    except AssertionError:
        print(cluster.output()[-5000:])
        raise
    assert batch.status == Batch.Status.FINISHED
    assert WebhookDelivery.objects.filter(batch=batch).count() == 1
    (request,) = posts(receiver)
    assert request.headers["webhook-id"] == str(delivery.pk)
    assert signed_by(secret, request)
    body = body_of(request)
    assert body["type"] == "batch.finished"
    assert body["batch"]["id"] == str(batch.pk)
    assert body["batch"]["counts"]["succeeded"] == 50
    assert delivery.attempts == 1


# The fewest seconds between progress deliveries in these tests.
PROGRESS_SECONDS = 1


def settled(cluster, *batches: Batch) -> list[WebhookDelivery]:
    """Wait until every delivery of the ended batches has landed; return them, oldest first."""
    deliveries = WebhookDelivery.objects.filter(batch__in=batches).order_by("created_at")

    def landed():
        found = list(deliveries.all())
        return found if all(d.status == WebhookDelivery.Status.SUCCEEDED for d in found) else None

    try:
        return wait_for(landed, timeout=60)
    except AssertionError:
        print([(d.event, d.status, d.attempts, d.last_error) for d in deliveries])
        print(cluster.output()[-5000:])
        raise


def test_cluster_webhook__progress_rises_no_oftener_than_asked_then_the_end(
    client_a, account, cluster_factory, receiver
):
    receiver.expect_request(HOOK, method="POST").respond_with_data("ok")
    secret = webhooks.webhook_secret_rotate(account=account)
    cluster = cluster_factory(
        env={
            "BATCHSITE_OUTBOUND_ALLOWED_HOSTS": "localhost",
            "BATCHSITE_WEBHOOK_PROGRESS_SECONDS": str(PROGRESS_SECONDS),
        }
    )
    url = receiver.url_for(HOOK)
    items = [{"payload": {"sleep_ms": 150, "fail": n % 5 == 0}} for n in range(40)]

    watched = create_batch(
        client_a,
        items=items,
        commit=True,
        options={"callback_url": url, "webhook_events": ["batch.progress", "batch.ended"]},
    )
    quiet = create_batch(client_a, items=items, commit=True, options={"callback_url": url})
    watched_batch = wait_terminal(watched["id"], cluster)
    quiet_batch = wait_terminal(quiet["id"], cluster)
    deliveries = settled(cluster, watched_batch, quiet_batch)

    # The batch that asked for nothing more got its end only, though items failed.
    assert [d.event for d in deliveries if d.batch_id == quiet_batch.pk] == ["batch.finished"]
    mine = [d for d in deliveries if d.batch_id == watched_batch.pk]
    (end,) = [d for d in mine if d.event != "batch.progress"]
    progress = [d for d in mine if d.event == "batch.progress"]
    assert end.event == "batch.finished"
    assert len(progress) >= 2, [d.event for d in mine]
    bodies = [json.loads(d.body) for d in progress]
    # Each made while the batch ran, so before its end (deliveries may still land in
    # another order: a worker's progress can race another worker's finalize).
    assert all(body["batch"]["status"] == "running" for body in bodies)
    shares = [body["batch"]["progress"] for body in bodies]
    assert shares == sorted(shares)
    assert shares[0] < shares[-1] <= json.loads(end.body)["batch"]["progress"] == 1.0
    gaps = [(b.created_at - a.created_at).total_seconds() for a, b in itertools.pairwise(progress)]
    assert min(gaps) >= PROGRESS_SECONDS
    received = [json.loads(r.get_data()) for r in posts(receiver)]
    assert sorted(b["id"] for b in received) == sorted(str(d.pk) for d in deliveries)
    assert all(signed_by(secret, request) for request in posts(receiver))


def test_cluster_webhook__item_failed_lists_exactly_the_failed_items(
    client_a, account, cluster_factory, receiver
):
    receiver.expect_request(HOOK, method="POST").respond_with_data("ok")
    secret = webhooks.webhook_secret_rotate(account=account)
    cluster = cluster_factory(env={"BATCHSITE_OUTBOUND_ALLOWED_HOSTS": "localhost"})
    items = [
        {"external_id": f"row-{n}", "payload": {"sleep_ms": 5, "fail": n % 7 in (1, 2)}}
        for n in range(300)
    ]

    created = create_batch(
        client_a,
        items=items,
        commit=True,
        options={
            "callback_url": receiver.url_for(HOOK),
            "webhook_events": ["item.failed", "batch.ended"],
        },
    )
    batch = wait_terminal(created["id"], cluster)
    deliveries = settled(cluster, batch)

    assert deliveries[-1].event == "batch.finished"
    grouped = [json.loads(d.body) for d in deliveries if d.event == "item.failed"]
    assert grouped
    assert len(grouped) == len(deliveries) - 1
    assert all(body["type"] == "item.failed" and body["items"] for body in grouped)
    listed = sorted((item for body in grouped for item in body["items"]), key=lambda i: i["index"])
    failed = list(
        Item.objects.filter(batch=batch, status=Item.Status.FAILED)
        .order_by("index")
        .values("index", "external_id", "error_code", "error_message")
    )
    assert len(failed) == sum(1 for n in range(300) if n % 7 in (1, 2))
    assert listed == failed
    assert all(signed_by(secret, request) for request in posts(receiver))
