"""Engine guarantees under crashes and concurrency, with real qcluster subprocesses."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from batches import services
from batches.engine.sweep import sweep_run
from batches.models import Batch, BatchEvent, Item
from tests.conftest import wait_for
from tests.e2e.helpers import read_log
from tests.e2e.test_cluster import recount
from tests.factories import AccountFactory

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def record_batch(count: int, *, sleep_ms: float = 0) -> Batch:
    """Create and commit a batch of `test.record` items, 10,000 per request."""
    batch, _ = services.batch_create(account=AccountFactory(), actor="test", type="test.record")
    for start in range(0, count, 10_000):
        items = [
            {"payload": {"n": n, **({"sleep_ms": sleep_ms} if sleep_ms else {})}}
            for n in range(start, min(count, start + 10_000))
        ]
        services.items_add(batch=batch, items=items, actor="test")
    return services.batch_commit(batch=batch, actor="test")


def assert_never_concurrent(runs: dict[int, list[tuple[float, float, int]]]) -> None:
    for n, executions in runs.items():
        executions.sort()
        for (_, end, _pid), (start, _, _) in itertools.pairwise(executions):
            assert start >= end, f"item {n} ran twice at once: {executions}"


def wait_ended(batch: Batch, clusters, *, sweep: bool, timeout: float = 240) -> Batch:
    def ended():
        if sweep:
            sweep_run()
        current = Batch.objects.get(pk=batch.pk)
        return current if current.is_terminal else None

    try:
        return wait_for(ended, timeout=timeout, interval=0.5)
    except AssertionError:
        for cluster in clusters:
            print(cluster.output()[-4000:])
        raise


@pytest.fixture
def exec_log(tmp_path) -> Path:
    return tmp_path / "executions.log"


def test_kill_9__a_killed_cluster_loses_no_item(cluster_factory, exec_log, settings):
    # The test process runs the sweep; queued chunks whose tasks died with the cluster
    # (the Redis broker drops them) are handed out again after this many seconds.
    settings.BATCHSITE_REQUEUE_AFTER = 2
    env = {"BATCHSITE_LEASE_SECONDS": "3", "BATCHSITE_TEST_EXEC_LOG": str(exec_log)}
    first = cluster_factory(env=env)
    batch = record_batch(20_000, sleep_ms=0.3)
    wait_for(lambda: Batch.objects.get(pk=batch.pk).succeeded_items >= 4000, timeout=120)

    first.kill()
    killed_at = Batch.objects.get(pk=batch.pk)
    assert not killed_at.is_terminal, "the batch ended before the kill; make items slower"
    second = cluster_factory(env=env)
    batch = wait_ended(batch, [first, second], sweep=True)

    assert batch.status == Batch.Status.FINISHED
    assert batch.counts() == recount(batch)
    assert batch.succeeded_items == 20_000
    runs = read_log(exec_log)
    assert set(runs) == set(range(20_000))
    assert_never_concurrent(runs)
    # Only items in flight when the cluster died may have run twice: at most one slice
    # per worker.
    repeated = [n for n, executions in runs.items() if len(executions) > 1]
    assert len(repeated) <= 2 * 100
    assert set(Item.objects.filter(batch=batch).values_list("status", flat=True)) == {"succeeded"}
    assert BatchEvent.objects.filter(batch=batch, kind="finished").count() == 1


def test_two_clusters__one_batch_runs_each_item_exactly_once(cluster_factory, exec_log):
    env = {"BATCHSITE_TEST_EXEC_LOG": str(exec_log)}
    clusters = [cluster_factory(env=env), cluster_factory(env=env)]
    batch = record_batch(50_000)

    batch = wait_ended(batch, clusters, sweep=False)

    assert batch.status == Batch.Status.FINISHED
    assert batch.counts() == recount(batch)
    runs = read_log(exec_log)
    assert set(runs) == set(range(50_000))
    assert all(len(executions) == 1 for executions in runs.values())
    pids = {pid for executions in runs.values() for _, _, pid in executions}
    assert len(pids) >= 2, "expected the work to be shared between worker processes"
    assert BatchEvent.objects.filter(batch=batch, kind="finished").count() == 1
    assert BatchEvent.objects.filter(batch=batch, kind="started").count() == 1


def test_sweep__a_chunk_task_lost_by_the_broker_is_sent_again(cluster_factory, settings):
    from django_q.brokers import get_broker

    settings.BATCHSITE_REQUEUE_AFTER = 0
    batch = record_batch(300)
    # Lose every task, as a Redis broker does when the worker that popped it is killed.
    get_broker().purge_queue()
    cluster_factory(env={"BATCHSITE_TEST_EXEC_LOG": os.devnull})

    batch = wait_ended(batch, [], sweep=True, timeout=60)

    assert batch.status == Batch.Status.FINISHED
    assert batch.succeeded_items == 300
