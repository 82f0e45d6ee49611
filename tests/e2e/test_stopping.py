"""Stop at the item, pause mid-chunk, time limits, chunks by item type: real qclusters."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from batches import services
from batches.models import Batch, BatchEvent, Chunk, Item
from tests.conftest import wait_for
from tests.e2e.helpers import most_at_once, read_log, wait_terminal
from tests.helpers import recount
from tests.helpers.api import create_batch

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

BATCHES = "/api/v1/batches/"
BRIGHTLOCAL = "/compat/brightlocal/seo-tools/api/v4/batch"


def failing_at(index: int, count: int, **payload) -> list[dict]:
    return [
        {"payload": {"n": n, **payload, **({"fail": True} if n == index else {})}}
        for n in range(count)
    ]


def ended_after_stop(batch: Batch) -> int:
    """Count the items that ended (ran) after the stop was recorded."""
    stopped_at = BatchEvent.objects.get(batch=batch, kind="stop_requested").created_at
    ran = Item.objects.filter(batch=batch, status__in=["succeeded", "failed"])
    return ran.filter(finished_at__gt=stopped_at).count()


@pytest.fixture
def exec_log(tmp_path) -> Path:
    return tmp_path / "executions.log"


# --- stop at the item ---------------------------------------------------------------------------


def test_cluster__stop_on_error_with_one_worker_runs_nothing_after_the_failure(
    client_a, cluster_factory
):
    cluster = cluster_factory(workers=1)
    body = create_batch(
        client_a, items=failing_at(10, 3000), options={"stop_on_error": True}, commit=True
    )

    batch = wait_terminal(body["id"], cluster)

    print(f"one worker: {ended_after_stop(batch)} items ran after the stop was recorded")
    assert batch.status == Batch.Status.STOPPED
    assert batch.counts() == recount(batch)
    assert (batch.succeeded_items, batch.failed_items, batch.cancelled_items) == (10, 1, 2989)
    assert list(
        Item.objects.filter(batch=batch, status="succeeded").values_list("index", flat=True)
    ) == list(range(10))


def test_cluster__stop_on_error_with_four_workers_lets_at_most_three_more_items_start(
    client_a, cluster_factory
):
    cluster = cluster_factory(workers=4)
    # Four chunks of 750; each item takes 5 ms, so every worker is busy when item 10 fails.
    items = failing_at(10, 3000, sleep_ms=5)
    body = create_batch(
        client_a, type="test.echo750", items=items, options={"stop_on_error": True}, commit=True
    )

    batch = wait_terminal(body["id"], cluster)

    assert batch.status == Batch.Status.STOPPED
    assert batch.counts() == recount(batch)
    assert Chunk.objects.filter(batch=batch).count() == 4
    after = ended_after_stop(batch)
    print(f"four workers: {after} items ran after the stop was recorded")
    assert after <= 3
    # Nothing in the failing worker's own chunk ran after the failure.
    assert not Item.objects.filter(batch=batch, index__range=(11, 749), status="succeeded").exists()


def test_cluster__brightlocal_stop_on_job_error_runs_no_later_job(account, cluster_factory):
    client = APIClient()
    key = services.api_key_create(account=account, name="brightlocal")[1]
    response = client.post(BRIGHTLOCAL, {"api-key": key, "stop-on-job-error": "1"})
    batch_id = response.json()["batch-id"]
    for n in range(3000):
        job = {"api-key": key, "batch-id": batch_id, "job-type": "echo", "n": n}
        if n == 10:
            job["fail"] = True
        assert client.post(f"{BRIGHTLOCAL}/jobs", job, format="json").status_code == 200
    cluster = cluster_factory(workers=1)

    assert client.put(BRIGHTLOCAL, {"api-key": key, "batch-id": batch_id}).status_code == 200
    batch = wait_terminal(Batch.objects.get(number=batch_id).pk, cluster)

    assert batch.status == Batch.Status.STOPPED
    assert (batch.succeeded_items, batch.failed_items, batch.cancelled_items) == (10, 1, 2989)


# --- pause mid-chunk ----------------------------------------------------------------------------


def test_cluster__pause_of_a_one_chunk_batch_stops_mid_chunk_and_resume_runs_each_item_once(
    client_a, cluster_factory, exec_log
):
    cluster = cluster_factory(workers=2, env={"BATCHSITE_TEST_EXEC_LOG": str(exec_log)})
    items = [{"payload": {"n": n, "sleep_ms": 10}} for n in range(200)]
    body = create_batch(client_a, type="test.record", items=items, commit=True)
    batch_id = body["id"]
    assert Chunk.objects.filter(batch_id=batch_id).count() == 1
    wait_for(lambda: exec_log.exists() and len(read_log(exec_log)) >= 20, timeout=60)

    assert client_a.post(f"{BATCHES}{batch_id}/pause/").status_code == 200

    wait_for(lambda: Chunk.objects.filter(batch_id=batch_id, status="queued").exists(), timeout=30)
    ran_at_pause = len(read_log(exec_log))
    time.sleep(1.5)
    still = Batch.objects.get(pk=batch_id)
    assert len(read_log(exec_log)) == ran_at_pause == still.succeeded_items
    assert still.running_items == 0
    assert still.queued_items == 200 - ran_at_pause > 0
    assert still.counts() == recount(still)

    assert client_a.post(f"{BATCHES}{batch_id}/resume/").status_code == 200
    batch = wait_terminal(batch_id, cluster)

    assert batch.status == Batch.Status.FINISHED
    assert batch.succeeded_items == 200
    runs = read_log(exec_log)
    assert sorted(runs) == list(range(200))
    assert all(len(executions) == 1 for executions in runs.values())


# --- time limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(("job_type", "field"), [("test.hang", "hang"), ("test.block", "block")])
def test_cluster__an_item_past_its_time_limit_fails_alone_in_the_same_worker(
    client_a, cluster_factory, job_type, field
):
    # A kill timeout far beyond the item's 0.5 s limit: the limit, not the kill, ends the item.
    cluster = cluster_factory(workers=1, env={"BATCHSITE_TASK_TIMEOUT": "600"})
    items = [{"payload": {"n": n, field: n == 3}} for n in range(8)]

    batch = wait_terminal(
        create_batch(client_a, type=job_type, items=items, commit=True)["id"], cluster
    )

    assert batch.status == Batch.Status.FINISHED
    assert batch.counts() == recount(batch)
    stuck = Item.objects.get(batch=batch, index=3)
    assert stuck.status == "failed"
    assert stuck.error_code == "timeout"
    assert stuck.error_message.endswith("took longer than its time limit of 0.5s")
    others = Item.objects.filter(batch=batch).exclude(index=3)
    assert {item.status for item in others} == {"succeeded"}
    assert {item.attempts for item in others} == {1}
    # The worker process lived on: the items before and after the stuck one share its pid.
    assert len({item.result["pid"] for item in others}) == 1


# --- chunks follow the items' types -------------------------------------------------------------


def test_cluster__slow_items_in_a_mixed_batch_spread_over_the_workers(
    client_a, cluster_factory, exec_log
):
    cluster = cluster_factory(workers=4, env={"BATCHSITE_TEST_EXEC_LOG": str(exec_log)})
    # A batch of type echo (5,000 items a chunk) with 40 slow test.paced items (5 a chunk).
    items = (
        [{"payload": {"n": n}} for n in range(100)]
        + [{"type": "test.paced", "payload": {"n": n, "sleep_ms": 100}} for n in range(40)]
        + [{"payload": {"n": n}} for n in range(100)]
    )

    batch = wait_terminal(
        create_batch(client_a, type="echo", items=items, commit=True)["id"], cluster
    )

    assert batch.status == Batch.Status.FINISHED
    assert batch.succeeded_items == 240
    runs = read_log(exec_log)
    assert sorted(runs) == list(range(40))
    pids = {pid for executions in runs.values() for _, _, pid in executions}
    assert len(pids) >= 3
    assert most_at_once(runs) >= 3
