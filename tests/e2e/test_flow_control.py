"""Pause/resume, max_concurrency and priority with real qcluster subprocesses."""

from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

import pytest
from django.utils import timezone

from batches import services
from batches.engine import planning
from batches.models import Batch, BatchEvent, Chunk, Item
from tests.conftest import wait_for
from tests.e2e.helpers import most_at_once, read_log, wait_terminal
from tests.e2e.test_cluster import recount

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

BATCHES = "/api/v1/batches/"


def create_paced(client, count: int, *, sleep_ms: int, **options) -> dict:
    """Create and commit a test.paced batch (five items a chunk) through the API."""
    items = [{"payload": {"n": n, "sleep_ms": sleep_ms}} for n in range(count)]
    response = client.post(
        BATCHES,
        {"type": "test.paced", "items": items, "options": options, "commit": True},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def exec_log(tmp_path) -> Path:
    return tmp_path / "executions.log"


def test_cluster__max_concurrency_caps_chunks_in_flight(client_a, cluster_factory, exec_log):
    cluster = cluster_factory(workers=4, env={"BATCHSITE_TEST_EXEC_LOG": str(exec_log)})
    body = create_paced(client_a, 40, sleep_ms=40, max_concurrency=2)

    batch = wait_terminal(body["id"], cluster)

    assert batch.status == Batch.Status.FINISHED
    assert batch.counts() == recount(batch)
    runs = read_log(exec_log)
    assert sorted(runs) == list(range(40))
    assert all(len(executions) == 1 for executions in runs.values())
    # Items of a chunk run one after another, so two chunks in flight is two items at once.
    assert most_at_once(runs) <= 2


def test_cluster__pause_stops_new_chunks_and_resume_finishes_the_batch(
    client_a, cluster_factory, exec_log
):
    cluster = cluster_factory(workers=2, env={"BATCHSITE_TEST_EXEC_LOG": str(exec_log)})
    body = create_paced(client_a, 100, sleep_ms=30)
    batch_id = body["id"]
    wait_for(lambda: Batch.objects.get(pk=batch_id).succeeded_items >= 10, timeout=60)

    paused = client_a.post(f"{BATCHES}{batch_id}/pause/")
    assert paused.status_code == 200
    assert paused.json()["paused"] is True
    # Chunks in flight finish; then nothing moves.
    wait_for(
        lambda: not Chunk.objects.filter(batch_id=batch_id, status="running").exists(),
        timeout=60,
    )
    settled = Batch.objects.get(pk=batch_id)
    time.sleep(1.5)
    still = Batch.objects.get(pk=batch_id)
    assert still.status == Batch.Status.RUNNING
    assert still.counts() == settled.counts()
    assert still.running_items == 0
    assert 0 < still.queued_items < 100
    assert len(read_log(exec_log)) == still.succeeded_items

    resumed = client_a.post(f"{BATCHES}{batch_id}/resume/")
    assert resumed.status_code == 200
    batch = wait_terminal(batch_id, cluster)

    assert batch.status == Batch.Status.FINISHED
    assert batch.counts() == recount(batch)
    assert batch.succeeded_items == 100
    runs = read_log(exec_log)
    assert sorted(runs) == list(range(100))
    assert all(len(executions) == 1 for executions in runs.values())
    kinds = list(BatchEvent.objects.filter(batch_id=batch_id).values_list("kind", flat=True))
    assert kinds.index("paused") < kinds.index("resumed") < kinds.index("finished")


def test_cluster__a_higher_priority_batch_overtakes_one_committed_before_it(
    client_a, cluster_factory, exec_log
):
    cluster = cluster_factory(workers=1, env={"BATCHSITE_TEST_EXEC_LOG": str(exec_log)})
    low = create_paced(client_a, 60, sleep_ms=20)
    high = create_paced(client_a, 10, sleep_ms=20, priority=10)

    high_batch = wait_terminal(high["id"], cluster)
    low_batch = wait_terminal(low["id"], cluster)

    assert high_batch.status == low_batch.status == Batch.Status.FINISHED
    assert high_batch.finished_at < low_batch.finished_at
    assert high_batch.counts() == recount(high_batch)
    assert low_batch.counts() == recount(low_batch)
    # Every item ran once, in either batch.
    assert Item.objects.filter(batch_id__in=[low["id"], high["id"]], attempts=1).count() == 70


def test_cluster__a_free_worker_takes_the_chunks_whose_tasks_wait_elsewhere(
    account, cluster_factory, exec_log
):
    # Four chunks whose tasks are out, as if in another, busy cluster's prefetch queue;
    # only the first task reaches this cluster, and the sweep would not send the others
    # again within the test.
    with mock.patch.object(planning, "chunks_enqueue"):
        batch, _ = services.batch_create(
            account=account,
            actor="test",
            type="test.paced",
            items=[{"payload": {"n": n, "sleep_ms": 5}} for n in range(20)],
            commit=True,
        )
    chunks = Chunk.objects.filter(batch=batch).order_by("start_index")
    assert chunks.count() == 4
    chunks.update(enqueued_at=timezone.now())
    planning.chunks_enqueue([chunks[0].pk])
    cluster = cluster_factory(
        workers=1,
        env={"BATCHSITE_TEST_EXEC_LOG": str(exec_log), "BATCHSITE_REQUEUE_AFTER": "3600"},
    )

    batch = wait_terminal(batch.pk, cluster, timeout=60)

    assert batch.status == Batch.Status.FINISHED
    assert batch.counts() == recount(batch)
    runs = read_log(exec_log)
    assert sorted(runs) == list(range(20))
    assert all(len(executions) == 1 for executions in runs.values())


def test_cluster__raising_max_concurrency_on_a_running_batch_takes_effect(
    client_a, cluster_factory, exec_log
):
    cluster = cluster_factory(workers=4, env={"BATCHSITE_TEST_EXEC_LOG": str(exec_log)})
    body = create_paced(client_a, 80, sleep_ms=40, max_concurrency=1)
    batch_id = body["id"]
    wait_for(lambda: Batch.objects.get(pk=batch_id).succeeded_items >= 10, timeout=60)

    changed_at = time.time()
    response = client_a.patch(f"{BATCHES}{batch_id}/", {"max_concurrency": 4}, format="json")
    assert response.status_code == 200, response.json()
    batch = wait_terminal(batch_id, cluster)

    assert batch.status == Batch.Status.FINISHED
    assert batch.counts() == recount(batch)
    runs = read_log(exec_log)
    assert sorted(runs) == list(range(80))
    assert all(len(executions) == 1 for executions in runs.values())
    before = {n: runs[n] for n in runs if runs[n][0][1] <= changed_at}
    after = {n: runs[n] for n in runs if runs[n][0][0] > changed_at}
    assert most_at_once(before) == 1
    assert most_at_once(after) > 1


def test_cluster__a_priority_raised_after_commit_lets_the_batch_overtake(
    client_a, cluster_factory, exec_log
):
    low = create_paced(client_a, 60, sleep_ms=20)
    high = create_paced(client_a, 10, sleep_ms=20)
    response = client_a.patch(f"{BATCHES}{high['id']}/", {"priority": 10}, format="json")
    assert response.status_code == 200, response.json()
    cluster = cluster_factory(workers=1, env={"BATCHSITE_TEST_EXEC_LOG": str(exec_log)})

    high_batch = wait_terminal(high["id"], cluster)
    low_batch = wait_terminal(low["id"], cluster)

    assert high_batch.status == low_batch.status == Batch.Status.FINISHED
    assert high_batch.finished_at < low_batch.finished_at
    assert Item.objects.filter(batch_id__in=[low["id"], high["id"]], attempts=1).count() == 70
