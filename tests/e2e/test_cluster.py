"""End to end through the API with a real `manage.py qcluster` subprocess (not sync mode)."""

from __future__ import annotations

import time

import pytest

from batches.models import Batch, Chunk, Item
from tests.conftest import wait_for
from tests.e2e.helpers import wait_terminal
from tests.helpers import recount
from tests.helpers.api import create_batch

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def test_cluster__2000_items_with_failures_finish_with_exact_counters(client_a, cluster):
    failing = {7, 999, 1500, 1999}
    items = [{"payload": {"n": n, **({"fail": True} if n in failing else {})}} for n in range(2000)]
    started = time.monotonic()
    batch = create_batch(client_a, items=items, commit=True)

    batch = wait_terminal(batch["id"], cluster)
    elapsed = time.monotonic() - started

    print(f"2000 echo items: commit to finished in {elapsed:.2f}s")
    assert batch.status == Batch.Status.FINISHED
    assert recount(batch) == batch.counts()
    assert batch.counts()["succeeded"] == 2000 - len(failing)
    assert batch.counts()["failed"] == len(failing)
    failed = set(Item.objects.filter(batch=batch, status="failed").values_list("index", flat=True))
    assert failed == failing
    assert not Chunk.objects.filter(batch=batch).exclude(status=Chunk.Status.DONE).exists()
    detail = client_a.get(f"/api/v1/batches/{batch.pk}/").json()
    assert detail["status"] == "finished"
    assert detail["progress"] == 1.0
    kinds = [
        e["kind"] for e in client_a.get(f"/api/v1/batches/{batch.pk}/events/").json()["results"]
    ]
    assert kinds.count("finished") == 1
    assert kinds.count("started") == 1


def test_cluster__stop_on_error_stops_and_cancels_the_rest(client_a, cluster):
    items = [{"payload": {"n": n, **({"fail": True} if n == 10 else {})}} for n in range(2000)]
    batch = create_batch(client_a, items=items, options={"stop_on_error": True}, commit=True)

    batch = wait_terminal(batch["id"], cluster)

    assert batch.status == Batch.Status.STOPPED
    counts = batch.counts()
    assert counts == recount(batch)
    assert counts["failed"] == 1
    assert counts["cancelled"] > 0
    assert counts["queued"] == counts["running"] == counts["pending"] == 0
    assert counts["succeeded"] + counts["failed"] + counts["cancelled"] == 2000


def test_cluster__atomic_batch_with_one_failure_publishes_nothing(client_a, cluster):
    items = [{"payload": {"n": n, **({"fail": True} if n == 1200 else {})}} for n in range(2000)]
    batch = create_batch(client_a, items=items, options={"atomic": True}, commit=True)

    batch = wait_terminal(batch["id"], cluster)

    assert batch.status == Batch.Status.FAILED
    counts = batch.counts()
    assert counts == recount(batch)
    assert counts["succeeded"] == 0
    assert counts["failed"] == 1
    assert counts["cancelled"] == 1999
    assert not Item.objects.filter(batch=batch, result__isnull=False).exists()
    results = client_a.get(f"/api/v1/batches/{batch.pk}/results/").json()
    assert results["results"] == {}


def test_cluster__cancel_during_a_run_leaves_nothing_queued_or_running(client_a, cluster):
    items = [{"payload": {"n": n, "sleep_ms": 20}} for n in range(400)]
    batch = create_batch(client_a, items=items, commit=True)
    wait_for(lambda: Batch.objects.get(pk=batch["id"]).succeeded_items > 0, timeout=60)

    response = client_a.post(f"/api/v1/batches/{batch['id']}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] in ("cancelling", "cancelled")
    batch = wait_terminal(batch["id"], cluster)
    assert batch.status == Batch.Status.CANCELLED
    counts = batch.counts()
    assert counts == recount(batch)
    assert counts["queued"] == counts["running"] == 0
    assert counts["succeeded"] > 0
    assert counts["cancelled"] > 0
    # Items that ended before the cancel keep their results.
    done = Item.objects.filter(batch=batch, status="succeeded")
    assert all(item.result == item.payload for item in done)


def test_cluster__rerun_failed_items_runs_only_those(client_a, cluster):
    items = [{"payload": {"n": n, **({"fail": True} if n % 100 == 0 else {})}} for n in range(300)]
    batch = create_batch(client_a, items=items, commit=True)
    batch = wait_terminal(batch["id"], cluster)
    assert batch.failed_items == 3
    before = dict(Item.objects.filter(batch=batch, status="succeeded").values_list("id", "seq"))

    response = client_a.post(
        f"/api/v1/batches/{batch.pk}/rerun/", {"items": "failed"}, format="json"
    )

    assert response.status_code == 200, response.json()
    batch = wait_terminal(batch.pk, cluster)
    assert batch.status == Batch.Status.FINISHED
    assert batch.counts() == recount(batch)
    assert batch.failed_items == 3  # echo with fail: true fails again
    after = dict(Item.objects.filter(batch=batch, status="succeeded").values_list("id", "seq"))
    assert after == before  # the succeeded items were not run again


def test_cluster__max_failures_stops_once_exceeded(client_a, cluster):
    items = [{"payload": {"n": n, **({"fail": True} if n % 10 == 0 else {})}} for n in range(3000)]
    batch = create_batch(client_a, items=items, options={"max_failures": 5}, commit=True)

    batch = wait_terminal(batch["id"], cluster)

    assert batch.status == Batch.Status.STOPPED
    counts = batch.counts()
    assert counts == recount(batch)
    assert counts["failed"] > 5
    assert counts["cancelled"] > 0
    stops = [
        e["kind"] for e in client_a.get(f"/api/v1/batches/{batch.pk}/events/").json()["results"]
    ]
    assert stops.count("stop_requested") == 1
    assert stops.count("stopped") == 1


def test_cluster__transient_failures_are_retried_until_success(client_a, cluster):
    items = [{"payload": {"n": n, "transient_failures": n % 3}} for n in range(30)]
    batch = create_batch(client_a, items=items, commit=True)

    batch = wait_terminal(batch["id"], cluster)

    assert batch.status == Batch.Status.FINISHED
    assert batch.succeeded_items == 30
    attempts = dict(Item.objects.filter(batch=batch).values_list("index", "attempts"))
    assert attempts == {n: n % 3 + 1 for n in range(30)}


def test_cluster__transient_failures_past_max_attempts_fail_the_item(client_a, cluster):
    batch = create_batch(client_a, items=[{"payload": {"transient_failures": 99}}], commit=True)

    batch = wait_terminal(batch["id"], cluster)

    item = Item.objects.get(batch=batch)
    assert item.status == Item.Status.FAILED
    assert item.attempts == 5  # echo's max_attempts
    assert item.error_message.startswith("gave up after 5 attempts")


def test_cluster__rerun_all_runs_every_item_again(client_a, cluster):
    items = [{"payload": {"n": n}} for n in range(500)]
    batch = create_batch(client_a, items=items, commit=True)
    batch = wait_terminal(batch["id"], cluster)
    first_seqs = set(Item.objects.filter(batch=batch).values_list("seq", flat=True))

    response = client_a.post(f"/api/v1/batches/{batch.pk}/rerun/", {"items": "all"}, format="json")

    assert response.status_code == 200
    batch = wait_terminal(batch.pk, cluster)
    assert batch.status == Batch.Status.FINISHED
    assert batch.succeeded_items == 500
    assert batch.counts() == recount(batch)
    second_seqs = set(Item.objects.filter(batch=batch).values_list("seq", flat=True))
    assert not first_seqs & second_seqs  # every item was written again


def test_cluster__not_before_waits_for_the_sweep(client_a, cluster):
    from datetime import timedelta

    from django.utils import timezone

    from batches.engine.sweep import sweep_run

    not_before = (timezone.now() + timedelta(hours=1)).isoformat()
    items = [{"payload": {"n": n}} for n in range(100)]
    batch = create_batch(client_a, items=items, options={"not_before": not_before}, commit=True)
    time.sleep(1.5)  # the cluster polls every 0.1 s; nothing may start meanwhile
    assert Batch.objects.get(pk=batch["id"]).status == Batch.Status.COMMITTED

    Batch.objects.filter(pk=batch["id"]).update(not_before=timezone.now())
    sweep_run()

    batch = wait_terminal(batch["id"], cluster)
    assert batch.status == Batch.Status.FINISHED
    assert batch.succeeded_items == 100
