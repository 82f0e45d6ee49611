"""Tests for batches.engine.sweep: the lock, lost chunks, not_before, TTL, deadlines, retention."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule

from batches import engine, services, tasks
from batches.engine import finalize, locks, sweep
from batches.exceptions import BatchFinished, BatchNotOpen
from batches.models import Batch, BatchError, BatchEvent, Chunk, Item, Lock
from tests.factories import open_batch
from tests.helpers import assert_counters_exact, kinds, statuses
from tests.helpers.files import batch_files_dir

S = Batch.Status
STEPS = {"abandoned", "requeued", "expired", "finalized", "purged"}


# --- helpers ------------------------------------------------------------------------------------


def touched(report: dict[str, int]) -> dict[str, int]:
    """Return the steps of a sweep report that touched something; check it is a full report."""
    assert set(report) >= STEPS, report
    return {step: count for step, count in report.items() if count}


def terminal_kinds(batch: Batch) -> list[str]:
    return [kind for kind in kinds(batch) if kind in Batch.TERMINAL]


def echo_items(count: int, **special: dict) -> list[dict]:
    """Return `count` items; `special` maps "i<index>" to that item's payload."""
    return [{"payload": special.get(f"i{n}", {"n": n})} for n in range(count)]


def chunks_of(batch: Batch) -> list[Chunk]:
    return list(Chunk.objects.filter(batch=batch).order_by("start_index"))


def only_chunk(batch: Batch) -> Chunk:
    return Chunk.objects.get(batch=batch)


def ago(**delta) -> datetime:
    return timezone.now() - timedelta(**delta)


def expire_lease(chunk_id: int) -> None:
    """Let the chunk's lease run out, as it does when its worker dies."""
    Chunk.objects.filter(pk=chunk_id).update(lease_expires_at=ago(seconds=1))


def backdate(batch: Batch, **fields) -> None:
    Batch.objects.filter(pk=batch.pk).update(**fields)


class WorkerKilled(BaseException):
    """Stands for a worker process killed mid-slice: nothing in the engine catches it."""


@pytest.fixture(autouse=True)
def _long_slices(settings):
    # Slices end by size, never by the clock, so slice boundaries are deterministic.
    settings.BATCHSITE_SLICE_SECONDS = 3600


@pytest.fixture
def lock_released(db):
    """Start from a sweep lock an earlier sweep took and gave back."""
    Lock.objects.create(name=sweep.SWEEP_LOCK, owner="", expires_at=ago(seconds=5))


@pytest.fixture
def run_sweep(lock_released, django_capture_on_commit_callbacks):
    """Run one sweep as the schedule does: outside any transaction, so on_commit work runs."""

    def run() -> dict[str, int]:
        with django_capture_on_commit_callbacks(execute=True):
            report = sweep.sweep_run()
        assert "skipped" not in report
        return report

    return run


@pytest.fixture
def make(account, django_capture_on_commit_callbacks):
    """Create (and by default commit) a batch; run it inline only when run=True."""

    def make_batch(items, *, type=None, commit=True, run=False, **options) -> Batch:
        with django_capture_on_commit_callbacks(execute=run):
            batch, _ = services.batch_create(
                account=account,
                actor="test",
                type=type,
                items=items,
                options=options or None,
                commit=commit,
            )
        return Batch.objects.get(pk=batch.pk)

    return make_batch


def crash_mid_slice(batch: Batch, flaky_hooks, *, owner: str = "doomed") -> Chunk:
    """Run the batch's only chunk under a worker that dies in its first slice."""
    chunk_id = only_chunk(batch).pk
    claimed = engine.chunk_claim(chunk_id=chunk_id, owner=owner)
    runner = engine.ChunkRunner(chunk=claimed, owner=owner)

    def die():
        raise WorkerKilled

    flaky_hooks["die"] = die
    with pytest.raises(WorkerKilled):
        runner.run()
    return Chunk.objects.get(pk=chunk_id)


# --- the lock -----------------------------------------------------------------------------------


def test_lock_acquire__first_acquire_of_a_new_lock_succeeds(db):
    assert locks.lock_acquire(name="fresh", owner="a", seconds=60) is True

    lock = Lock.objects.get(name="fresh")
    assert lock.owner == "a"
    assert lock.expires_at > timezone.now()


def test_lock_acquire__held_lock_is_refused_to_others_and_renewed_for_its_owner(db):
    Lock.objects.create(name="l", owner="a", expires_at=timezone.now() + timedelta(seconds=30))

    assert locks.lock_acquire(name="l", owner="b", seconds=60) is False
    assert Lock.objects.get(name="l").owner == "a"
    assert locks.lock_acquire(name="l", owner="a", seconds=600) is True
    assert Lock.objects.get(name="l").expires_at > timezone.now() + timedelta(seconds=300)


def test_lock_release__only_the_holder_releases(db):
    Lock.objects.create(name="l", owner="a", expires_at=timezone.now() + timedelta(seconds=30))

    locks.lock_release(name="l", owner="b")
    assert Lock.objects.get(name="l").owner == "a"
    locks.lock_release(name="l", owner="a")

    assert Lock.objects.get(name="l").owner == ""
    assert locks.lock_acquire(name="l", owner="b", seconds=60) is True


def test_sweep_run__first_sweep_of_a_fresh_install_runs(db):
    # No lock row yet: nobody holds the lock, so this sweep must not be skipped.
    assert not Lock.objects.exists()

    assert touched(sweep.sweep_run()) == {}


def test_sweep_run__skipped_while_another_sweep_holds_the_lock(account):
    held_until = timezone.now() + timedelta(seconds=200)
    Lock.objects.create(name=sweep.SWEEP_LOCK, owner="other-sweep", expires_at=held_until)
    batch = open_batch(account=account, items=2)
    backdate(batch, created_at=ago(days=400))

    assert sweep.sweep_run() == {"skipped": 1}

    lock = Lock.objects.get(name=sweep.SWEEP_LOCK)
    assert (lock.owner, lock.expires_at) == ("other-sweep", held_until)
    assert Batch.objects.get(pk=batch.pk).status == S.OPEN
    assert statuses(batch) == ["pending", "pending"]


def test_sweep_run__expired_lock_of_a_dead_sweep_is_taken_over(account, settings):
    Lock.objects.create(name=sweep.SWEEP_LOCK, owner="dead-sweep", expires_at=ago(seconds=1))
    batch = open_batch(account=account, items=1)
    backdate(batch, created_at=ago(seconds=settings.BATCHSITE_OPEN_BATCH_TTL + 60))

    report = sweep.sweep_run()

    assert touched(report) == {"expired": 1}
    assert Batch.objects.get(pk=batch.pk).status == S.EXPIRED
    assert Lock.objects.get(name=sweep.SWEEP_LOCK).owner == ""


def test_sweep_run__lock_is_released_after_a_run(lock_released):
    assert touched(sweep.sweep_run()) == {}

    lock = Lock.objects.get(name=sweep.SWEEP_LOCK)
    assert lock.owner == ""
    assert lock.expires_at <= timezone.now()
    assert locks.lock_acquire(name=sweep.SWEEP_LOCK, owner="next-sweep", seconds=300) is True


def test_sweep_run__lock_is_released_when_a_step_raises(lock_released, monkeypatch):
    def explode(now):
        raise RuntimeError("database went away")

    monkeypatch.setattr(sweep, "batches_expire", explode)

    with pytest.raises(RuntimeError):
        sweep.sweep_run()

    assert Lock.objects.get(name=sweep.SWEEP_LOCK).owner == ""
    assert locks.lock_acquire(name=sweep.SWEEP_LOCK, owner="next-sweep", seconds=300) is True


def test_sweep_scheduled__runs_once_per_interval_however_many_clusters_fire_it(
    lock_released, settings
):
    settings.BATCHSITE_SWEEP_MINUTES = 1

    first = sweep.sweep_scheduled()
    second = sweep.sweep_scheduled()

    assert "skipped" not in first
    assert second == {"skipped": 1}
    gate = Lock.objects.get(name=sweep.INTERVAL_LOCK)
    assert timezone.now() + timedelta(seconds=50) < gate.expires_at
    assert gate.expires_at <= timezone.now() + timedelta(seconds=60)


def test_sweep_scheduled__runs_again_once_the_interval_has_passed(lock_released):
    assert "skipped" not in sweep.sweep_scheduled()
    Lock.objects.filter(name=sweep.INTERVAL_LOCK).update(expires_at=ago(seconds=1))

    assert "skipped" not in sweep.sweep_scheduled()


# --- chunks_requeue -----------------------------------------------------------------------------


@pytest.mark.parametrize("enqueued", ["never", "before_the_claim"])
def test_chunks_requeue__chunk_of_a_dead_worker_runs_again_and_finishes(make, run_sweep, enqueued):
    batch = make(echo_items(4, i1={"fail": True}))
    chunk = only_chunk(batch)
    if enqueued == "before_the_claim":
        # The task arrived and a worker claimed the chunk: enqueued_at < lease_expires_at.
        Chunk.objects.filter(pk=chunk.pk).update(enqueued_at=ago(seconds=10))
    assert engine.chunk_claim(chunk_id=chunk.pk, owner="dead-worker") is not None
    expire_lease(chunk.pk)

    report = run_sweep()

    assert touched(report) == {"requeued": 1}
    chunk.refresh_from_db()
    assert chunk.status == Chunk.Status.DONE
    assert chunk.attempts == 2
    assert chunk.enqueued_at > ago(seconds=5)
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["succeeded", "failed", "succeeded", "succeeded"]
    assert set(Item.objects.filter(batch=batch).values_list("attempts", flat=True)) == {1}
    assert terminal_kinds(batch) == ["finished"]
    assert kinds(batch).count("started") == 1


def test_chunks_requeue__items_a_dead_worker_left_running_run_again(make, flaky_hooks, run_sweep):
    batch = make(echo_items(15, i2={"hook": "die"}), type="test.flaky")
    chunk = crash_mid_slice(batch, flaky_hooks)
    assert Batch.objects.get(pk=batch.pk).running_items == 10
    expire_lease(chunk.pk)

    report = run_sweep()

    assert touched(report) == {"requeued": 1}
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert batch.succeeded_items == 15
    assert not Item.objects.filter(batch=batch, error_code="worker_lost").exists()
    # The dead worker's outcomes were never written, so each item ran to completion once.
    assert set(Item.objects.filter(batch=batch).values_list("attempts", flat=True)) == {1}
    assert terminal_kinds(batch) == ["finished"]


def test_chunks_requeue__queued_chunk_never_enqueued_is_enqueued(make, run_sweep):
    # The commit's on_commit never ran (the process died right after the commit).
    batch = make(echo_items(3))
    assert only_chunk(batch).enqueued_at is None

    report = run_sweep()

    assert touched(report) == {"requeued": 1}
    assert only_chunk(batch).enqueued_at is not None
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert batch.succeeded_items == 3


def test_chunks_requeue__queued_chunk_enqueued_too_long_ago_is_enqueued(make, run_sweep, settings):
    batch = make(echo_items(3))
    long_ago = ago(seconds=settings.BATCHSITE_REQUEUE_AFTER + 30)
    Chunk.objects.filter(batch=batch).update(enqueued_at=long_ago)

    report = run_sweep()

    assert touched(report) == {"requeued": 1}
    assert only_chunk(batch).enqueued_at > long_ago
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert batch.succeeded_items == 3


def test_chunks_requeue__recently_enqueued_queued_chunk_is_left_alone(make, run_sweep, settings):
    batch = make(echo_items(3))
    recently = ago(seconds=settings.BATCHSITE_REQUEUE_AFTER - 30)
    Chunk.objects.filter(batch=batch).update(enqueued_at=recently)

    report = run_sweep()

    assert touched(report) == {}
    chunk = only_chunk(batch)
    assert (chunk.status, chunk.enqueued_at, chunk.attempts) == ("queued", recently, 0)
    batch = assert_counters_exact(batch)
    assert batch.status == S.COMMITTED
    assert statuses(batch) == ["queued"] * 3


def test_chunks_requeue__chunk_with_a_live_lease_is_left_alone(make, run_sweep):
    batch = make(echo_items(3))
    claimed = engine.chunk_claim(chunk_id=only_chunk(batch).pk, owner="live-worker")

    report = run_sweep()

    assert touched(report) == {}
    chunk = only_chunk(batch)
    assert (chunk.status, chunk.lease_owner, chunk.attempts) == ("running", "live-worker", 1)
    assert chunk.lease_expires_at == claimed.lease_expires_at
    assert chunk.enqueued_at is None
    assert statuses(batch) == ["queued"] * 3
    assert Batch.objects.get(pk=batch.pk).status == S.COMMITTED


def test_chunks_requeue__dead_worker_chunk_requeued_recently_is_not_sent_again(make, run_sweep):
    batch = make(echo_items(3))
    chunk = only_chunk(batch)
    engine.chunk_claim(chunk_id=chunk.pk, owner="dead-worker")
    # An earlier sweep re-sent it after the lease ran out; that task is still on its way.
    Chunk.objects.filter(pk=chunk.pk).update(
        lease_expires_at=ago(seconds=30), enqueued_at=ago(seconds=10)
    )

    report = run_sweep()

    assert touched(report) == {}
    chunk.refresh_from_db()
    assert (chunk.status, chunk.lease_owner, chunk.attempts) == ("running", "dead-worker", 1)
    assert Batch.objects.get(pk=batch.pk).status == S.COMMITTED


def test_chunks_requeue__chunks_of_ended_batches_are_not_enqueued(make, run_sweep):
    batch = make(echo_items(2), run=True)
    Chunk.objects.filter(batch=batch).update(enqueued_at=None)

    report = run_sweep()

    assert touched(report) == {}
    assert only_chunk(batch).enqueued_at is None


# --- not_before ---------------------------------------------------------------------------------


def test_sweep_run__batch_waiting_for_not_before_starts_once_it_passed(
    account, django_capture_on_commit_callbacks, run_sweep
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        batch, _ = services.batch_create(
            account=account,
            actor="test",
            items=echo_items(3),
            options={"not_before": timezone.now() + timedelta(hours=1)},
            commit=True,
        )

    assert callbacks == []
    assert [c.enqueued_at for c in chunks_of(batch)] == [None]
    assert statuses(batch) == ["queued"] * 3
    assert Batch.objects.get(pk=batch.pk).status == S.COMMITTED

    assert touched(run_sweep()) == {}
    assert only_chunk(batch).enqueued_at is None
    assert Batch.objects.get(pk=batch.pk).status == S.COMMITTED
    assert statuses(batch) == ["queued"] * 3

    backdate(batch, not_before=ago(seconds=1))
    report = run_sweep()

    assert touched(report) == {"requeued": 1}
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert batch.succeeded_items == 3
    assert terminal_kinds(batch) == ["finished"]


def test_chunks_requeue__rerun_waiting_for_not_before_starts_once_it_passed(
    make, django_capture_on_commit_callbacks, run_sweep
):
    batch = make(echo_items(2, i0={"fail": True}), run=True)
    backdate(batch, not_before=timezone.now() + timedelta(hours=1))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.batch_rerun(batch=batch, which="failed", actor="test")

    assert callbacks == []
    assert touched(run_sweep()) == {}
    assert Batch.objects.get(pk=batch.pk).status == S.COMMITTED
    backdate(batch, not_before=ago(seconds=1))
    assert touched(run_sweep()) == {"requeued": 1}
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert terminal_kinds(batch) == ["finished", "finished"]


# --- TTL ----------------------------------------------------------------------------------------


def test_batches_expire__batches_left_uncommitted_past_the_ttl_expire(account, run_sweep, settings):
    ttl = settings.BATCHSITE_OPEN_BATCH_TTL
    stale = open_batch(account=account, items=3)
    backdate(stale, created_at=ago(seconds=ttl + 60))
    empty, _ = services.batch_create(account=account, actor="test")
    backdate(empty, created_at=ago(seconds=ttl + 60))
    young = open_batch(account=account, items=2)
    backdate(young, created_at=ago(seconds=ttl - 600))

    report = run_sweep()

    assert touched(report) == {"expired": 2}
    stale = assert_counters_exact(stale)
    assert stale.status == S.EXPIRED
    assert stale.finished_at is not None
    assert statuses(stale) == ["cancelled"] * 3
    assert not Item.objects.filter(batch=stale, finished_at__isnull=True).exists()
    assert kinds(stale) == ["created", "items_added", "expired"]
    event = BatchEvent.objects.get(batch=stale, kind="expired")
    assert (event.actor, event.detail) == ("sweep", {"reason": "left uncommitted past its TTL"})
    empty.refresh_from_db()
    assert (empty.status, empty.total_items) == (S.EXPIRED, 0)
    assert kinds(empty) == ["created", "expired"]
    young = assert_counters_exact(young)
    assert young.status == S.OPEN
    assert young.finished_at is None
    assert statuses(young) == ["pending"] * 2
    assert kinds(young) == ["created", "items_added"]


def test_batches_expire__ttl_never_expires_a_committed_batch(make, run_sweep, settings):
    # Run first: a worker done with its chunk takes chunks whose tasks wait.
    finished = make(echo_items(1), run=True)
    backdate(finished, created_at=ago(seconds=settings.BATCHSITE_OPEN_BATCH_TTL * 3))
    batch = make(echo_items(2))
    backdate(batch, created_at=ago(seconds=settings.BATCHSITE_OPEN_BATCH_TTL * 3))
    # Its task sits in the broker; the sweep must leave the batch to it.
    Chunk.objects.filter(batch=batch).update(enqueued_at=timezone.now())

    report = run_sweep()

    assert touched(report) == {}
    assert Batch.objects.get(pk=batch.pk).status == S.COMMITTED
    assert statuses(batch) == ["queued", "queued"]
    assert "expired" not in kinds(batch)
    assert Batch.objects.get(pk=finished.pk).status == S.FINISHED
    assert terminal_kinds(finished) == ["finished"]


def test_batches_expire__expired_batch_refuses_items_and_commit(account, run_sweep, settings):
    batch = open_batch(account=account, items=1)
    backdate(batch, created_at=ago(seconds=settings.BATCHSITE_OPEN_BATCH_TTL + 1))
    assert touched(run_sweep()) == {"expired": 1}

    with pytest.raises(BatchNotOpen):
        services.items_add(batch=batch, items=[{"payload": {}}], actor="test")
    with pytest.raises(BatchFinished):
        services.batch_commit(batch=batch, actor="test")

    batch = assert_counters_exact(batch)
    assert (batch.status, batch.total_items) == (S.EXPIRED, 1)


# --- deadline -----------------------------------------------------------------------------------


def test_batches_expire__open_batch_past_its_deadline_expires(account, run_sweep):
    late = open_batch(account=account, items=2, deadline=timezone.now() + timedelta(hours=1))
    backdate(late, deadline=ago(seconds=1))
    on_time = open_batch(account=account, items=2, deadline=timezone.now() + timedelta(hours=1))

    report = run_sweep()

    assert touched(report) == {"expired": 1}
    late = assert_counters_exact(late)
    assert late.status == S.EXPIRED
    assert late.finished_at is not None
    assert statuses(late) == ["cancelled", "cancelled"]
    event = BatchEvent.objects.get(batch=late, kind="expired")
    assert event.detail == {"reason": "its deadline passed"}
    assert Batch.objects.get(pk=on_time.pk).status == S.OPEN
    assert statuses(on_time) == ["pending", "pending"]


def test_batches_expire__running_batch_past_its_deadline_keeps_what_ended(make, run_sweep):
    # test.flaky: chunk_size 100 -> two chunks; the first runs before the deadline.
    batch = make(
        echo_items(150, i7={"crash": True}),
        type="test.flaky",
        deadline=timezone.now() + timedelta(hours=1),
    )
    first, second = chunks_of(batch)
    assert engine.chunk_process(chunk_id=first.pk) == "done"
    # The second chunk's task is waiting in the broker when the deadline passes.
    Chunk.objects.filter(pk=second.pk).update(enqueued_at=timezone.now())
    assert Batch.objects.get(pk=batch.pk).status == S.RUNNING
    backdate(batch, deadline=ago(seconds=1))

    report = run_sweep()

    assert touched(report) == {"expired": 1}
    batch = assert_counters_exact(batch)
    assert batch.status == S.EXPIRED
    assert batch.finished_at is not None
    assert batch.ending == ""
    assert (batch.succeeded_items, batch.failed_items, batch.cancelled_items) == (99, 1, 50)
    expected = ["succeeded"] * 7 + ["failed"] + ["succeeded"] * 92 + ["cancelled"] * 50
    assert statuses(batch) == expected
    assert Item.objects.get(batch=batch, index=3).result == {"n": 3}
    assert Item.objects.get(batch=batch, index=7).error_code == "exception"
    assert not Item.objects.filter(batch=batch, index__gte=100).exclude(result=None).exists()
    assert kinds(batch)[-2:] == ["stop_requested", "expired"]
    assert BatchEvent.objects.get(batch=batch, kind="stop_requested").detail == {
        "ending": "expired",
        "reason": "its deadline passed",
    }
    assert {c.status for c in chunks_of(batch)} == {Chunk.Status.DONE}
    # The waiting task arrives after all and finds nothing to do.
    assert engine.chunk_process(chunk_id=second.pk) == "not claimable"
    assert assert_counters_exact(batch).status == S.EXPIRED


def test_batches_expire__running_batch_past_its_deadline_waits_for_its_live_worker(make, run_sweep):
    batch = make(echo_items(3), deadline=timezone.now() + timedelta(hours=1))
    chunk = engine.chunk_claim(chunk_id=only_chunk(batch).pk, owner="live-worker")
    backdate(batch, deadline=ago(seconds=1))

    assert touched(run_sweep()) == {"expired": 1}

    batch = assert_counters_exact(batch)
    assert (batch.status, batch.ending) == (S.CANCELLING, S.EXPIRED)
    assert engine.ChunkRunner(chunk=chunk, owner="live-worker").run() == "done"
    batch = assert_counters_exact(batch)
    assert batch.status == S.EXPIRED
    assert statuses(batch) == ["cancelled"] * 3
    assert terminal_kinds(batch) == ["expired"]
    # A second sweep finds nothing left to expire.
    assert touched(run_sweep()) == {}
    assert terminal_kinds(batch) == ["expired"]


def test_batches_expire__ended_batch_past_its_deadline_is_left_alone(make, run_sweep):
    batch = make(echo_items(2), run=True, deadline=timezone.now() + timedelta(hours=1))
    backdate(batch, deadline=ago(seconds=1))

    assert touched(run_sweep()) == {}

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["succeeded", "succeeded"]
    assert terminal_kinds(batch) == ["finished"]


# --- stuck finalization -------------------------------------------------------------------------


def test_batches_finalize_stuck__finalizes_once_and_a_second_sweep_changes_nothing(
    make, monkeypatch, run_sweep
):
    batch = make(echo_items(3, i1={"fail": True}))
    with monkeypatch.context() as patched:
        # The worker closed the last chunk and died before finalizing the batch.
        patched.setattr(finalize, "batch_finalize_if_done", lambda batch_id: None)
        assert engine.chunk_process(chunk_id=only_chunk(batch).pk) == "done"
    assert Batch.objects.get(pk=batch.pk).status == S.RUNNING
    assert terminal_kinds(batch) == []

    report = run_sweep()

    assert touched(report) == {"finalized": 1}
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert batch.finished_at is not None
    assert statuses(batch) == ["succeeded", "failed", "succeeded"]
    assert terminal_kinds(batch) == ["finished"]
    events_before = kinds(batch)

    assert touched(run_sweep()) == {}

    again = assert_counters_exact(batch)
    assert again.finished_at == batch.finished_at
    assert kinds(batch) == events_before


def test_batches_finalize_stuck__cancelling_batch_whose_worker_died_ends_cancelled(
    make, monkeypatch, run_sweep
):
    batch = make(echo_items(3))
    chunk = engine.chunk_claim(chunk_id=only_chunk(batch).pk, owner="worker-1")
    services.batch_cancel(batch=batch, actor="test")
    with monkeypatch.context() as patched:
        patched.setattr(finalize, "batch_finalize_if_done", lambda batch_id: None)
        assert engine.ChunkRunner(chunk=chunk, owner="worker-1").run() == "done"
    assert Batch.objects.get(pk=batch.pk).status == S.CANCELLING

    assert touched(run_sweep()) == {"finalized": 1}

    batch = assert_counters_exact(batch)
    assert batch.status == S.CANCELLED
    assert statuses(batch) == ["cancelled"] * 3
    assert terminal_kinds(batch) == ["cancelled"]


def test_batches_finalize_stuck__batch_with_a_live_chunk_is_not_finalized(make, run_sweep):
    batch = make(echo_items(2))
    engine.chunk_claim(chunk_id=only_chunk(batch).pk, owner="live-worker")

    assert touched(run_sweep()) == {}

    assert Batch.objects.get(pk=batch.pk).status == S.COMMITTED
    assert terminal_kinds(batch) == []


# --- retention ----------------------------------------------------------------------------------


def assert_purged(batch_id) -> None:
    assert not Batch.objects.filter(pk=batch_id).exists()
    for model in (Item, BatchEvent, BatchError, Chunk):
        assert not model.objects.filter(batch_id=batch_id).exists(), model


def assert_kept(batch: Batch) -> None:
    assert Batch.objects.filter(pk=batch.pk).exists()
    assert Item.objects.filter(batch=batch).count() == batch.total_items
    assert BatchEvent.objects.filter(batch=batch).exists()


def test_batches_purge__ended_batches_past_the_default_retention_are_deleted(
    make, run_sweep, settings
):
    days = settings.BATCHSITE_RETENTION_DAYS
    old = make(echo_items(2, i1={"fail": True}), run=True)
    BatchError.objects.create(
        batch=old, item=Item.objects.get(batch=old, index=1), index=1, code="x", message="bad"
    )
    files = batch_files_dir(old.pk)
    files.mkdir(parents=True)
    (files / "out.txt").write_text("x")
    backdate(old, finished_at=ago(days=days, hours=1))
    recent = make(echo_items(2), run=True)
    backdate(recent, finished_at=ago(days=days - 1))
    BatchError.objects.create(batch=recent, index=0, code="y", message="kept")
    active = make(echo_items(2))
    Chunk.objects.filter(batch=active).update(enqueued_at=timezone.now())
    backdate(active, created_at=ago(days=days * 3))

    report = run_sweep()

    assert touched(report) == {"purged": 1}
    assert_purged(old.pk)
    assert not files.exists()
    assert_kept(recent)
    assert BatchError.objects.filter(batch=recent).count() == 1
    assert assert_counters_exact(recent).status == S.FINISHED
    assert_kept(active)
    assert Batch.objects.get(pk=active.pk).status == S.COMMITTED


def test_batches_purge__retention_days_zero_purges_at_the_next_sweep(make, run_sweep):
    batch = make(echo_items(2), run=True, retention_days=0)
    assert batch.status == S.FINISHED

    assert touched(run_sweep()) == {"purged": 1}

    assert_purged(batch.pk)


def test_batches_purge__longer_retention_days_keeps_an_old_batch(make, run_sweep, settings):
    batch = make(echo_items(2), run=True, retention_days=365)
    backdate(batch, finished_at=ago(days=settings.BATCHSITE_RETENTION_DAYS + 100))

    assert touched(run_sweep()) == {}

    assert_kept(batch)
    assert Batch.objects.get(pk=batch.pk).status == S.FINISHED


def test_batches_purge__retention_past_what_a_date_can_hold_keeps_the_batch(make, run_sweep):
    batch = make(echo_items(1), run=True)
    # As the admin can set it: a cutoff this far back would be before year 1.
    Batch.objects.filter(pk=batch.pk).update(retention_days=1_000_000)

    assert touched(run_sweep()) == {}

    assert_kept(batch)


def test_batches_purge__shorter_retention_days_purges_before_the_default(make, run_sweep, settings):
    assert settings.BATCHSITE_RETENTION_DAYS > 6
    short = make(echo_items(1), run=True, retention_days=5)
    backdate(short, finished_at=ago(days=6))
    default = make(echo_items(1), run=True)
    backdate(default, finished_at=ago(days=6))
    kept_short = make(echo_items(1), run=True, retention_days=5)
    backdate(kept_short, finished_at=ago(days=4))

    assert touched(run_sweep()) == {"purged": 1}

    assert_purged(short.pk)
    assert_kept(default)
    assert_kept(kept_short)


def test_batches_purge__due_batch_is_purged_however_many_newer_batches_keep_theirs(
    make, account, run_sweep
):
    # Many newer ended batches that keep their own (long) retention must not hide an older
    # batch whose retention has run out.
    recently = ago(days=1)
    Batch.objects.bulk_create(
        Batch(
            account=account,
            number=1_000_000 + n,
            type="echo",
            status=S.FINISHED,
            retention_days=365,
            created_at=recently,
            finished_at=recently,
        )
        for n in range(1100)
    )
    due = make(echo_items(1), run=True, retention_days=5)
    backdate(due, created_at=ago(days=11), finished_at=ago(days=10))

    assert touched(run_sweep()) == {"purged": 1}

    assert_purged(due.pk)
    assert Batch.objects.filter(retention_days=365).count() == 1100


def test_batches_purge__batch_rerun_between_the_listing_and_the_purge_is_kept(
    make, django_capture_on_commit_callbacks
):
    rerun = make(echo_items(2, i1={"fail": True}), run=True, retention_days=0)
    other = make(echo_items(1), run=True, retention_days=0)
    now = timezone.now()
    due = sweep.batches_purge_due(now)
    assert {batch.pk for batch in due} == {rerun.pk, other.pk}
    with django_capture_on_commit_callbacks() as rerun_work:
        services.batch_rerun(batch=rerun, which="failed", actor="test")

    assert sweep.batches_purge(now, due) == 1

    assert_purged(other.pk)
    assert_kept(rerun)
    for work in rerun_work:  # the rerun's chunk runs after the purge passed it by
        work()
    assert assert_counters_exact(rerun).status == S.FINISHED
    assert kinds(rerun)[-3:] == ["rerun", "started", "finished"]


def test_batches_purge__retention_lengthened_after_the_listing_keeps_the_batch(make):
    batch = make(echo_items(1), run=True, retention_days=0)
    now = timezone.now()
    due = sweep.batches_purge_due(now)
    Batch.objects.filter(pk=batch.pk).update(retention_days=365)  # as an operator would

    assert sweep.batches_purge(now, due) == 0

    assert_kept(batch)


def test_batches_purge__active_and_recently_ended_batches_are_kept(make, run_sweep, settings):
    active = make(echo_items(2), retention_days=0)
    Chunk.objects.filter(batch=active).update(enqueued_at=timezone.now())
    # Even a stale finished_at (e.g. left from an earlier run) must not get it purged.
    backdate(active, finished_at=ago(days=settings.BATCHSITE_RETENTION_DAYS + 1))
    cancelled = open_batch(items=1)
    services.batch_cancel(batch=cancelled, actor="test")

    assert touched(run_sweep()) == {}

    assert_kept(active)
    assert Batch.objects.get(pk=active.pk).status == S.COMMITTED
    assert_kept(Batch.objects.get(pk=cancelled.pk))


# --- chunk attempts -----------------------------------------------------------------------------


def test_chunks_abandon_exhausted__items_in_flight_fail_and_the_rest_finish(
    make, flaky_hooks, run_sweep, settings
):
    batch = make(echo_items(15, i2={"hook": "die"}), type="test.flaky")
    chunk = crash_mid_slice(batch, flaky_hooks)
    # More workers claim the chunk and die before writing anything.
    for n in range(settings.BATCHSITE_CHUNK_MAX_ATTEMPTS - 1):
        expire_lease(chunk.pk)
        assert engine.chunk_claim(chunk_id=chunk.pk, owner=f"doomed-{n}") is not None
    expire_lease(chunk.pk)
    assert Chunk.objects.get(pk=chunk.pk).attempts == settings.BATCHSITE_CHUNK_MAX_ATTEMPTS

    report = run_sweep()

    assert report["abandoned"] == 1
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["failed"] * 10 + ["succeeded"] * 5
    lost = Item.objects.get(batch=batch, index=0)
    assert (lost.error_code, lost.result) == ("worker_lost", None)
    assert f"died {settings.BATCHSITE_CHUNK_MAX_ATTEMPTS} times" in lost.error_message
    chunk.refresh_from_db()
    assert (chunk.status, chunk.attempts) == (Chunk.Status.DONE, 1)
    assert terminal_kinds(batch) == ["finished"]


def test_chunks_abandon_exhausted__below_the_limit_nothing_is_abandoned(
    make, flaky_hooks, run_sweep, settings
):
    batch = make(echo_items(15, i2={"hook": "die"}), type="test.flaky")
    chunk = crash_mid_slice(batch, flaky_hooks)
    for n in range(settings.BATCHSITE_CHUNK_MAX_ATTEMPTS - 2):
        expire_lease(chunk.pk)
        engine.chunk_claim(chunk_id=chunk.pk, owner=f"doomed-{n}")
    expire_lease(chunk.pk)

    report = run_sweep()

    assert touched(report) == {"requeued": 1}
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert batch.succeeded_items == 15


# --- idempotence --------------------------------------------------------------------------------


def test_sweep_run__nothing_to_do_reports_zeros_and_writes_nothing(
    lock_released, django_assert_max_num_queries
):
    with CaptureQueriesContext(connection) as queries, django_assert_max_num_queries(15):
        report = sweep.sweep_run()

    assert touched(report) == {}
    writes = [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert writes
    assert all('"batches_lock"' in sql for sql in writes), writes
    for model in (Batch, Item, Chunk, BatchEvent, BatchError):
        assert not model.objects.exists(), model


def test_sweep_run__settled_batches_are_left_exactly_as_they_were(make, account, run_sweep):
    finished = make(echo_items(2, i0={"fail": True}), run=True)
    opened = open_batch(account=account, items=1)

    def state(batch):
        return (Batch.objects.filter(pk=batch.pk).values().get(), kinds(batch), statuses(batch))

    before = [state(finished), state(opened)]

    assert touched(run_sweep()) == {}
    assert touched(run_sweep()) == {}

    assert [state(finished), state(opened)] == before


# --- the schedule and the task ------------------------------------------------------------------


def test_sweep_schedule__exists_after_migrate(db, settings):
    schedule = Schedule.objects.get(name="batchsite sweep")

    assert schedule.func == "batches.tasks.sweep"
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == settings.BATCHSITE_SWEEP_MINUTES
    assert schedule.repeats == -1
    assert Schedule.objects.filter(func="batches.tasks.sweep").count() == 1


def test_sweep_task__returns_the_sweep_report(make, lock_released):
    batch = make(echo_items(2))

    report = tasks.sweep()

    assert touched(report) == {"requeued": 1}
    assert Batch.objects.get(pk=batch.pk).status == S.FINISHED


def test_sweep_task__never_raises(monkeypatch):
    def explode():
        raise RuntimeError("database went away")

    monkeypatch.setattr(sweep, "sweep_run", explode)

    assert tasks.sweep() == {"error": 1}
