"""A worker asked to stop: it finishes the item in hand, writes it, and gives its chunk back."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import threading

import pytest
from django_q.cluster import Sentinel

from batches import engine, services
from batches.engine import shutdown
from batches.engine.attempts import ItemRunner
from batches.models import Batch, Chunk, Item
from tests.helpers import assert_counters_exact
from tests.helpers import recount as item_counts

S = Batch.Status


@pytest.fixture(autouse=True)
def _not_stopping(tmp_path, monkeypatch, settings):
    """Start each test with no stop asked; test.record logs to a throw-away file."""
    monkeypatch.setattr(shutdown, "_requested", False)
    monkeypatch.setenv("BATCHSITE_TEST_EXEC_LOG", str(tmp_path / "exec.log"))
    settings.BATCHSITE_SLICE_SECONDS = 3600


@pytest.fixture
def committed(account, broker_queue, django_capture_on_commit_callbacks):
    """Create and commit a batch of `count` test.record items (chunks of 1,000)."""

    def make(count: int, type: str = "test.record") -> Batch:
        with django_capture_on_commit_callbacks(execute=True):
            batch, _ = services.batch_create(
                account=account,
                actor="test",
                type=type,
                items=[{"payload": {"n": n}} for n in range(count)],
                commit=True,
            )
        return Batch.objects.get(pk=batch.pk)

    return make


@pytest.fixture
def stop_after(monkeypatch):
    """Ask the worker to stop once the item of a given index has run."""

    def arrange(index: int) -> None:
        run = ItemRunner.run

        def run_then_stop(self, row):
            outcome = run(self, row)
            if row["index"] == index:
                shutdown.request()
            return outcome

        monkeypatch.setattr(ItemRunner, "run", run_then_stop)

    return arrange


def statuses(batch: Batch) -> dict[str, int]:
    return {s: n for s, n in item_counts(batch).items() if n and s != "total"}


def test_chunk_runner__a_stopping_worker_writes_its_item_and_sends_the_chunk_again(
    committed, broker_queue, stop_after, django_capture_on_commit_callbacks
):
    batch = committed(20)
    (chunk_id,) = Chunk.objects.filter(batch=batch).values_list("pk", flat=True)
    chunk = engine.chunk_claim(chunk_id=chunk_id, owner="worker-1")
    broker_queue.purge_queue()
    stop_after(2)

    with django_capture_on_commit_callbacks(execute=True):
        outcome = engine.ChunkRunner(chunk=chunk, owner="worker-1").run()

    assert outcome == "stopping"
    # The three items it ran are written; it started no fourth; the rest wait, queued.
    assert statuses(batch) == {"succeeded": 3, "queued": 17}
    succeeded = Item.objects.filter(batch=batch, status=Item.Status.SUCCEEDED)
    assert sorted(succeeded.values_list("index", flat=True)) == [0, 1, 2]
    chunk.refresh_from_db()
    assert chunk.status == Chunk.Status.QUEUED
    assert (chunk.lease_owner, chunk.lease_expires_at, chunk.pending_seq) == ("", None, None)
    assert chunk.attempts == 0  # a clean hand-back is no worker death
    assert chunk.enqueued_at is not None  # sent again, for another cluster
    assert broker_queue.queue_size() == 1
    batch = assert_counters_exact(batch)
    assert batch.status == S.RUNNING


def test_chunk_runner__the_chunk_a_stopping_worker_gave_back_runs_to_the_end(
    committed, broker_queue, stop_after, django_capture_on_commit_callbacks, monkeypatch
):
    # Item 4 does not run again, so the second worker is not asked to stop.
    batch = committed(20)
    (chunk_id,) = Chunk.objects.filter(batch=batch).values_list("pk", flat=True)
    stop_after(4)
    with django_capture_on_commit_callbacks(execute=True):
        engine.chunk_process(chunk_id=chunk_id)
    monkeypatch.setattr(shutdown, "_requested", False)  # another worker, not stopping

    assert engine.chunk_process(chunk_id=chunk_id) == "done"

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert set(Item.objects.filter(batch=batch).values_list("status", "attempts")) == {
        (Item.Status.SUCCEEDED, 1)
    }
    assert Chunk.objects.get(pk=chunk_id).attempts == 1


def test_chunk_runner__asked_to_stop_before_its_first_item_it_runs_none(
    committed, broker_queue, django_capture_on_commit_callbacks
):
    batch = committed(20)
    (chunk_id,) = Chunk.objects.filter(batch=batch).values_list("pk", flat=True)
    chunk = engine.chunk_claim(chunk_id=chunk_id, owner="worker-1")
    shutdown.request()

    with django_capture_on_commit_callbacks(execute=True):
        outcome = engine.ChunkRunner(chunk=chunk, owner="worker-1").run()

    assert outcome == "stopping"
    assert statuses(batch) == {"queued": 20}
    chunk.refresh_from_db()
    assert (chunk.status, chunk.attempts, chunk.lease_owner) == (Chunk.Status.QUEUED, 0, "")
    assert chunk.enqueued_at is not None
    batch = assert_counters_exact(batch)
    assert batch.status == S.COMMITTED  # no item ran: not started


def test_chunk_runner__a_stopping_worker_of_a_paused_batch_leaves_its_chunk_held(
    committed, broker_queue, django_capture_on_commit_callbacks
):
    batch = committed(20)
    (chunk_id,) = Chunk.objects.filter(batch=batch).values_list("pk", flat=True)
    chunk = engine.chunk_claim(chunk_id=chunk_id, owner="worker-1")
    broker_queue.purge_queue()
    services.batch_pause(batch=batch, actor="test")
    shutdown.request()

    with django_capture_on_commit_callbacks(execute=True):
        outcome = engine.ChunkRunner(chunk=chunk, owner="worker-1").run()

    assert outcome == "paused"
    chunk.refresh_from_db()
    assert (chunk.status, chunk.enqueued_at, chunk.lease_owner) == (Chunk.Status.QUEUED, None, "")
    assert broker_queue.queue_size() == 0  # the resume sends it
    assert_counters_exact(batch)


def test_chunk_runner__a_stopping_worker_of_a_cancelled_batch_cancels_the_rest(
    committed, broker_queue, monkeypatch, django_capture_on_commit_callbacks
):
    batch = committed(20)
    (chunk_id,) = Chunk.objects.filter(batch=batch).values_list("pk", flat=True)
    chunk = engine.chunk_claim(chunk_id=chunk_id, owner="worker-1")
    run = ItemRunner.run

    def run_then_cancel_and_stop(self, row):
        outcome = run(self, row)
        if row["index"] == 2:
            services.batch_cancel(batch=batch, actor="test")
            shutdown.request()
        return outcome

    monkeypatch.setattr(ItemRunner, "run", run_then_cancel_and_stop)

    with django_capture_on_commit_callbacks(execute=True):
        engine.ChunkRunner(chunk=chunk, owner="worker-1").run()

    assert statuses(batch) == {"succeeded": 3, "cancelled": 17}
    assert Chunk.objects.get(pk=chunk_id).status == Chunk.Status.DONE
    batch = assert_counters_exact(batch)
    assert batch.status == S.CANCELLED


def test_chunk_process__a_stopping_worker_passes_a_waiting_chunk_on(committed, broker_queue):
    batch = committed(20)
    (chunk_id,) = Chunk.objects.filter(batch=batch).values_list("pk", flat=True)
    broker_queue.purge_queue()
    shutdown.request()

    assert engine.chunk_process(chunk_id=chunk_id) == "passed on"

    assert broker_queue.queue_size() == 1
    assert Chunk.objects.get(pk=chunk_id).status == Chunk.Status.QUEUED
    assert statuses(batch) == {"queued": 20}


@pytest.mark.parametrize("state", ["held", "leased", "done"])
def test_chunk_process__a_stopping_worker_sends_no_task_a_chunk_does_not_need(
    committed, broker_queue, state
):
    batch = committed(20)
    (chunk_id,) = Chunk.objects.filter(batch=batch).values_list("pk", flat=True)
    if state == "held":
        engine.chunk_hold(chunk_id)
    elif state == "leased":
        engine.chunk_claim(chunk_id=chunk_id, owner="worker-2")
    else:
        Chunk.objects.filter(pk=chunk_id).update(status=Chunk.Status.DONE)
    broker_queue.purge_queue()
    shutdown.request()

    assert engine.chunk_process(chunk_id=chunk_id) == "not claimable"

    assert broker_queue.queue_size() == 0


def test_chunks_process__a_worker_asked_to_stop_takes_no_waiting_chunk(
    committed, broker_queue, stop_after, django_capture_on_commit_callbacks
):
    batch = committed(3000, type="test.echo750")
    first = Chunk.objects.filter(batch=batch).order_by("start_index").first()
    stop_after(first.start_index + 10)

    with django_capture_on_commit_callbacks(execute=True):
        outcome = engine.chunks_process(chunk_id=first.pk)

    assert outcome == "stopping"
    assert statuses(batch) == {"succeeded": 11, "queued": 2989}
    assert Chunk.objects.filter(status=Chunk.Status.QUEUED, batch=batch).count() == 4


def test_chunk_hand_back__of_a_chunk_no_longer_ours_changes_nothing(committed):
    batch = committed(20)
    (chunk_id,) = Chunk.objects.filter(batch=batch).values_list("pk", flat=True)
    chunk = engine.chunk_claim(chunk_id=chunk_id, owner="worker-2")

    assert not engine.chunk_hand_back(chunk=chunk, owner="worker-1", cursor=0, send=True)

    chunk.refresh_from_db()
    assert (chunk.status, chunk.lease_owner, chunk.attempts) == (
        Chunk.Status.RUNNING,
        "worker-2",
        1,
    )


def _worker(report) -> None:
    """Run as django-q2 runs a worker: a forked child whose post_spawn prepares it."""
    shutdown.worker_prepare(sender="django_q", proc_name="test")
    signal.raise_signal(signal.SIGINT)  # a terminal's Ctrl-C: no KeyboardInterrupt
    report.put(shutdown.requested())
    signal.raise_signal(shutdown.SIGNAL)  # the sentinel's request
    report.put(shutdown.requested())


def test_worker_prepare__in_a_worker_the_request_asks_to_stop_and_sigint_does_nothing():
    context = multiprocessing.get_context("fork")
    report = context.Queue()
    worker = context.Process(target=_worker, args=(report,))
    worker.start()

    assert report.get(timeout=30) is False
    assert report.get(timeout=30) is True
    worker.join(30)
    assert worker.exitcode == 0


def test_worker_prepare__where_a_task_runs_inline_leaves_sigint_alone():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(shutdown.SIGNAL)
    errors = []

    def in_thread() -> None:
        try:
            shutdown.worker_prepare(sender="django_q", proc_name="inline")
        except Exception as error:  # signal.signal outside the main thread raises
            errors.append(error)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(30)
    shutdown.worker_prepare(sender="django_q", proc_name="inline")

    assert errors == []
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(shutdown.SIGNAL)) == before


def test_install__the_sentinel_tells_its_workers_before_it_stops():
    # AppConfig.ready installed it.
    assert getattr(Sentinel.stop, "tells_workers", False)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time\n"
            f"signal.signal({int(shutdown.SIGNAL)}, lambda *_: sys.exit(7))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
    )
    assert worker.stdout.readline() == b"ready\n"

    shutdown.workers_tell([worker])

    assert worker.wait(timeout=10) == 7
