"""Engine guarantees under crashes and concurrency, with real qcluster subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connection

from batches import services
from batches.engine.sweep import sweep_run
from batches.models import Batch, BatchEvent, Item
from tests.conftest import wait_for
from tests.e2e.helpers import assert_never_concurrent, read_log
from tests.factories import AccountFactory
from tests.helpers import recount

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


def killed_sessions_wait_gone() -> None:
    """Wait until PostgreSQL has ended the killed workers' sessions.

    A worker killed after sending COMMIT may still have it applied by the server; until
    its session is gone, two reads could see the database before and after that commit.
    """
    if connection.vendor != "postgresql":
        return  # a SQLite transaction ends with the process that held it

    def gone() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0] == 0

    wait_for(gone, timeout=30)


def test_kill_9__mid_slice_the_counters_equal_a_recount_and_each_item_ends_once(
    cluster_factory, exec_log, settings
):
    settings.BATCHSITE_REQUEUE_AFTER = 2
    # Slices end only when their 100 items are done (10 ms each, about a second), so the
    # kill can be aimed at the middle of one.
    env = {
        "BATCHSITE_LEASE_SECONDS": "3",
        "BATCHSITE_SLICE_SECONDS": "60",
        "BATCHSITE_TEST_EXEC_LOG": str(exec_log),
    }
    first = cluster_factory(env=env)
    batch = record_batch(2000, sleep_ms=10)

    def mid_slice() -> bool:
        # Items that ran but whose outcome is not written belong to a slice in flight; with
        # 10 to 80 of them in one worker, its slice has at least 0.2 s more to run.
        written = set(
            Item.objects.filter(batch=batch, status=Item.Status.SUCCEEDED).values_list(
                "index", flat=True
            )
        )
        if not written or not exec_log.exists():
            return False
        unwritten: dict[int, int] = {}
        for n, executions in read_log(exec_log).items():
            if n not in written:
                pid = executions[-1][2]
                unwritten[pid] = unwritten.get(pid, 0) + 1
        return any(10 <= count <= 80 for count in unwritten.values())

    wait_for(mid_slice, timeout=60, interval=0.02)
    first.kill()
    killed_sessions_wait_gone()

    killed_at = Batch.objects.get(pk=batch.pk)
    assert killed_at.counts() == recount(killed_at)
    assert killed_at.running_items > 0
    assert 0 < killed_at.succeeded_items < 2000
    written = set(
        Item.objects.filter(batch=batch, status=Item.Status.SUCCEEDED).values_list(
            "index", flat=True
        )
    )
    lost = set(read_log(exec_log)) - written
    assert lost, "no item had run without its outcome written: the kill was not mid-slice"
    second = cluster_factory(env=env)
    batch = wait_ended(batch, [first, second], sweep=True, timeout=120)

    assert batch.status == Batch.Status.FINISHED
    assert batch.counts() == recount(batch)
    assert batch.succeeded_items == 2000
    items = list(Item.objects.filter(batch=batch).values_list("index", "status", "result", "seq"))
    assert len(items) == 2000
    assert {status for _, status, _, _ in items} == {Item.Status.SUCCEEDED}
    assert all(result == {"n": index} for index, _, result, _ in items)
    seqs = [seq for _, _, _, seq in items]
    assert None not in seqs
    assert len(set(seqs)) == len(seqs), "two outcomes took the same seq"
    assert max(seqs) <= batch.last_seq
    runs = read_log(exec_log)
    assert set(runs) == set(range(2000))
    assert_never_concurrent(runs)
    # What the kill threw away ran again; nothing else ran twice.
    assert {n for n, executions in runs.items() if len(executions) > 1} == lost
    assert all(len(runs[n]) == 2 for n in lost)
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
