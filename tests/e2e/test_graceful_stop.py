"""SIGTERM to qcluster, with real qcluster subprocesses: a quick exit, chunks given back at once.

Leases last 300 s and the sweep waits 600 s before it sends a lost task again, so only a
chunk given back and sent again by the stopping worker explains another cluster taking it
within seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from batches.models import Batch, BatchEvent, Chunk, Item
from tests.conftest import Cluster, wait_for
from tests.e2e.helpers import assert_never_concurrent, read_log, wait_terminal
from tests.e2e.test_crash import record_batch
from tests.helpers import counts_and_recount, recount

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

# Far beyond every bound below: a takeover within them is no lease running out.
LEASE_SECONDS = 300
# SIGTERM to exit: django-q2's guard cycle (0.5 s), one 10 ms item and one slice write,
# with room for a slow machine. A chunk of test.record (1,000 items) takes 10 s here, so
# a cluster that let its workers end their chunks would take far longer.
EXIT_WITHIN = 5
# From the SIGTERM until another cluster runs each chunk the stopped one held.
TAKEN_WITHIN = 30
SLEEP_MS = 10


@pytest.fixture
def exec_log(tmp_path) -> Path:
    return tmp_path / "executions.log"


@pytest.fixture
def env(exec_log) -> dict[str, str]:
    return {
        "BATCHSITE_LEASE_SECONDS": str(LEASE_SECONDS),
        "BATCHSITE_REQUEUE_AFTER": "600",
        "BATCHSITE_TEST_EXEC_LOG": str(exec_log),
    }


def group_pids(cluster: Cluster) -> set[int]:
    """Return the pids of the cluster's processes (its own process group) still alive."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone while we looked
            continue
        # After the command: state, ppid, pgrp. A zombie is gone for our purposes.
        if int(fields[2]) == cluster.process.pid and fields[0] != "Z":
            pids.add(int(entry.name))
    return pids


def owner_pid(lease_owner: str) -> int:
    """Return the worker pid in a lease owner, `host:pid:nonce`."""
    return int(lease_owner.rsplit(":", 2)[1])


def leased_by(batch: Batch, pids: set[int]) -> dict[int, str]:
    """Return the batch's running chunks whose lease a process in `pids` holds."""
    running = Chunk.objects.filter(batch=batch, status=Chunk.Status.RUNNING)
    return {
        pk: owner
        for pk, owner in running.values_list("pk", "lease_owner")
        if owner_pid(owner) in pids
    }


def sigterm(cluster: Cluster) -> float:
    """Send SIGTERM to the cluster's main process; return the seconds until all of it exited."""
    began = time.monotonic()
    cluster.process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        cluster.process.wait(timeout=3 * EXIT_WITHIN)
    wait_for(lambda: not group_pids(cluster), timeout=3 * EXIT_WITHIN, interval=0.05)
    took = time.monotonic() - began
    cluster.stop()  # closes its log (and would kill what is left)
    return took


def taken_again(chunk_ids: set[int], gone: set[int]) -> bool:
    """Say whether each chunk is done or leased by a process not in `gone`."""
    chunks = Chunk.objects.filter(pk__in=chunk_ids)
    return all(
        status == Chunk.Status.DONE
        or (status == Chunk.Status.RUNNING and owner_pid(owner) not in gone)
        for status, owner in chunks.values_list("status", "lease_owner")
    )


def assert_given_back(batch: Batch, gone: set[int]) -> None:
    """Assert that no chunk is leased by a stopped process and none waits for the sweep."""
    chunks = Chunk.objects.filter(batch=batch)
    assert leased_by(batch, gone) == {}
    # Given back and sent again: queued with a task out, not held.
    assert not chunks.filter(status=Chunk.Status.QUEUED, enqueued_at=None).exists()
    assert not chunks.exclude(status=Chunk.Status.DONE).filter(attempts__gt=1).exists()
    # The other cluster is still writing: the counters and the recount in one snapshot.
    counted, recounted = counts_and_recount(batch)
    assert counted == recounted


def assert_each_item_ran_once(batch: Batch, exec_log: Path, count: int) -> None:
    batch = Batch.objects.get(pk=batch.pk)
    assert batch.status == Batch.Status.FINISHED
    assert batch.counts() == recount(batch)
    assert batch.succeeded_items == count
    runs = read_log(exec_log)
    assert set(runs) == set(range(count))
    assert_never_concurrent(runs)
    assert [n for n, executions in runs.items() if len(executions) > 1] == []
    assert set(Item.objects.filter(batch=batch).values_list("status", "attempts")) == {
        (Item.Status.SUCCEEDED, 1)
    }
    assert BatchEvent.objects.filter(batch=batch, kind="finished").count() == 1


def batch_under_way() -> Batch:
    """Commit 3,000 slow `test.record` items and wait until 200 of them ran."""
    batch = record_batch(3000, sleep_ms=SLEEP_MS)
    wait_for(lambda: Batch.objects.get(pk=batch.pk).succeeded_items >= 200, timeout=60)
    return batch


def test_sigterm__the_cluster_exits_at_once_and_another_takes_its_chunks_over(
    cluster_factory, env, exec_log
):
    first = cluster_factory(env=env)
    # Three chunks: two running, one waiting in the cluster's queue.
    batch = batch_under_way()
    pids = group_pids(first)
    held = leased_by(batch, pids)
    assert held, "the cluster held no chunk when it was told to stop"

    took = sigterm(first)

    print(f"\nSIGTERM to exit: {took:.2f} s")
    assert took < EXIT_WITHIN
    stopped = Batch.objects.get(pk=batch.pk)
    assert not stopped.is_terminal, "the batch ended before the SIGTERM; make items slower"
    assert stopped.running_items == 0
    assert_given_back(batch, pids)
    began = time.monotonic()
    # Workers enough for every chunk at once: only a chunk left leased would wait.
    second = cluster_factory(env=env, workers=4)
    wait_for(lambda: taken_again(set(held), pids), timeout=TAKEN_WITHIN, interval=0.05)
    print(f"second cluster started to chunks taken again: {time.monotonic() - began:.2f} s")
    wait_terminal(batch.pk, second, timeout=60)

    assert_each_item_ran_once(batch, exec_log, 3000)


def test_sigterm__a_rolling_restart_of_two_clusters_loses_and_repeats_nothing(
    cluster_factory, env, exec_log
):
    clusters = [cluster_factory(env=env), cluster_factory(env=env)]
    # Eight chunks of 10 s each: about 20 s for four workers.
    batch = record_batch(8000, sleep_ms=SLEEP_MS)
    for turn in range(2):
        succeeded = 600 + 2000 * turn
        wait_for(
            lambda n=succeeded: Batch.objects.get(pk=batch.pk).succeeded_items >= n, timeout=60
        )
        stopping = clusters[turn]
        pids = group_pids(stopping)
        held = leased_by(batch, pids)
        assert held, f"turn {turn}: the cluster held no chunk when it was told to stop"

        took = sigterm(stopping)
        assert took < EXIT_WITHIN
        assert not Batch.objects.get(pk=batch.pk).is_terminal, "make items slower"
        assert_given_back(batch, pids)
        began = time.monotonic()
        clusters[turn] = cluster_factory(env=env)
        # The replacement, or the other cluster once a worker comes free, takes them.
        wait_for(lambda h=held, p=pids: taken_again(set(h), p), timeout=TAKEN_WITHIN, interval=0.05)
        print(
            f"\nturn {turn}: SIGTERM to exit {took:.2f} s; "
            f"its chunks taken again {time.monotonic() - began:.2f} s after that"
        )
    wait_terminal(batch.pk, clusters[1], timeout=90)

    assert_each_item_ran_once(batch, exec_log, 8000)
    # Both replacements worked too: the restart really rolled.
    pids = {pid for runs in read_log(exec_log).values() for _, _, pid in runs}
    assert len(pids) >= 6


def interrupt_group(cluster) -> float:
    """Ctrl-C a cluster's whole process group, as a terminal does; return the seconds
    until every one of its processes is gone."""
    began = time.monotonic()
    os.killpg(cluster.process.pid, signal.SIGINT)
    cluster.process.wait(timeout=3 * EXIT_WITHIN)
    wait_for(lambda: not group_pids(cluster), timeout=EXIT_WITHIN, interval=0.05)
    took = time.monotonic() - began
    cluster.stop()
    return took


def test_sigint_to_the_process_group__workers_finish_their_item_and_give_the_chunk_back(
    cluster_factory, env, exec_log
):
    # Ctrl-C in a terminal (and `make run`) signals every process of the cluster at once.
    first = cluster_factory(env=env)
    batch = batch_under_way()
    pids = group_pids(first)

    took = interrupt_group(first)

    assert took < EXIT_WITHIN
    assert "KeyboardInterrupt" not in first.output()
    assert Batch.objects.get(pk=batch.pk).running_items == 0
    assert_given_back(batch, pids)
    second = cluster_factory(env=env)
    wait_terminal(batch.pk, second, timeout=60)
    assert_each_item_ran_once(batch, exec_log, 3000)


def test_runlocal__ctrl_c_stops_its_cluster_cleanly(cluster_factory, env, exec_log, tmp_path):
    # `make run`: web and one cluster in the foreground; Ctrl-C signals the whole group.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = Cluster(
        env={
            **env,
            "BATCHSITE_SIGNING_KEY": str(tmp_path / "key.pem"),
            "BATCHSITE_SIGNING_CERT": str(tmp_path / "cert.pem"),
        }
    )
    runner.start(command=["runlocal", "--port", str(port)])
    batch = batch_under_way()
    pids = group_pids(runner)

    took = interrupt_group(runner)

    assert took < EXIT_WITHIN
    assert "batchsite stopped." in runner.output()
    assert Batch.objects.get(pk=batch.pk).running_items == 0
    assert_given_back(batch, pids)
    second = cluster_factory(env=env)
    wait_terminal(batch.pk, second, timeout=60)
    assert_each_item_ran_once(batch, exec_log, 3000)
