"""Tests for batches.engine: chunk claims and leases, slices, failure policies, finalize."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batches import engine, services, tasks
from batches.engine import nudges, runner
from batches.models import Batch, BatchEvent, Chunk, Item
from jobs import get_job_type
from tests.helpers import assert_counters_exact, kinds, statuses
from tests.jobtypes import Flaky

S = Batch.Status


def item(batch: Batch, index: int) -> Item:
    return Item.objects.get(batch=batch, index=index)


@pytest.fixture(autouse=True)
def _long_slices(settings):
    # Slices end by size, never by the clock, so slice boundaries are deterministic.
    settings.BATCHSITE_SLICE_SECONDS = 3600


@pytest.fixture
def backoffs(monkeypatch) -> list[int]:
    """Record retry backoffs instead of sleeping through them."""
    calls: list[int] = []

    def backoff(job_type, attempts):
        calls.append(attempts)
        return 0

    monkeypatch.setattr(engine.ItemRunner, "backoff", staticmethod(backoff))
    return calls


@pytest.fixture
def committed(account, django_capture_on_commit_callbacks):
    """Create and commit a batch without running it."""

    def make(items, *, type=None, **options) -> Batch:
        with django_capture_on_commit_callbacks():
            batch, _ = services.batch_create(
                account=account, actor="test", type=type, items=items, options=options, commit=True
            )
        return batch

    return make


def flaky_items(count: int, **special: dict) -> list[dict]:
    """Return `count` test.flaky items; `special` maps "i<index>" to that item's payload."""
    return [{"payload": special.get(f"i{n}", {"n": n})} for n in range(count)]


def only_chunk(batch: Batch) -> Chunk:
    return Chunk.objects.get(batch=batch)


def expire_lease(chunk_id: int) -> None:
    Chunk.objects.filter(pk=chunk_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


# --- processing ---------------------------------------------------------------------------------


def test_chunk_process__writes_results_and_counters(ran):
    batch = ran([{"external_id": f"e{n}", "payload": {"n": n}} for n in range(5)])

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert (batch.succeeded_items, batch.total_items) == (5, 5)
    assert batch.started_at is not None
    assert batch.finished_at >= batch.started_at
    assert batch.progress == 1.0
    rows = Item.objects.filter(batch=batch).order_by("index")
    assert [row.result for row in rows] == [{"n": n} for n in range(5)]
    assert {(row.status, row.attempts, row.error_code) for row in rows} == {("succeeded", 1, "")}
    assert all(row.finished_at is not None for row in rows)
    assert kinds(batch) == ["created", "items_added", "committed", "started", "finished"]
    assert BatchEvent.objects.get(batch=batch, kind="finished").detail == batch.counts()
    assert set(Chunk.objects.filter(batch=batch).values_list("status", flat=True)) == {"done"}


def test_chunk_process__many_slices_and_chunks_all_land(ran):
    # test.flaky: chunk_size 100, slice_size 10 -> 3 chunks, 25 slices.
    batch = ran(flaky_items(250), type="test.flaky")

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert batch.succeeded_items == 250
    assert Chunk.objects.filter(batch=batch, status=Chunk.Status.DONE).count() == 3
    assert kinds(batch).count("started") == 1
    assert kinds(batch).count("finished") == 1


def test_chunk_process__failed_item_ends_a_plain_batch_finished(ran):
    batch = ran([{"payload": {}}, {"payload": {"fail": True}}, {"payload": {}}])

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["succeeded", "failed", "succeeded"]
    failed = item(batch, 1)
    assert (failed.error_code, failed.result) == ("echo_failed", None)
    assert "asked echo to fail" in failed.error_message


def test_chunk_process__results_seq_is_unique_and_increasing_per_batch(
    ran, django_capture_on_commit_callbacks
):
    batch = ran(flaky_items(25, i7={"crash": True}), type="test.flaky")
    other = ran(flaky_items(3), type="test.flaky")

    seqs = list(Item.objects.filter(batch=batch).order_by("index").values_list("seq", flat=True))
    assert seqs == list(range(1, 26))
    assert Batch.objects.get(pk=batch.pk).last_seq == 25
    assert sorted(Item.objects.filter(batch=other).values_list("seq", flat=True)) == [1, 2, 3]

    with django_capture_on_commit_callbacks(execute=True):
        services.batch_rerun(batch=batch, which="failed", actor="test")

    seqs = list(Item.objects.filter(batch=batch).values_list("seq", flat=True))
    assert len(set(seqs)) == 25
    assert item(batch, 7).seq == 26


# --- failure policies ---------------------------------------------------------------------------


def test_chunk_process__stop_on_error_stops_and_cancels_the_rest(ran):
    batch = ran(flaky_items(30, i2={"crash": True}), type="test.flaky", stop_on_error=True)

    batch = assert_counters_exact(batch)
    assert batch.status == S.STOPPED
    # The worker that saw the failure starts no item after it.
    expected = ["succeeded", "succeeded", "failed"] + ["cancelled"] * 27
    assert statuses(batch) == expected
    assert all(i.result is None for i in Item.objects.filter(batch=batch, status="cancelled"))
    assert kinds(batch)[-2:] == ["stop_requested", "stopped"]
    detail = BatchEvent.objects.get(batch=batch, kind="stop_requested").detail
    assert detail == {"ending": "stopped", "reason": "stop_on_error: an item failed"}


def test_chunk_process__stop_on_error_closes_the_chunks_not_yet_started(ran):
    batch = ran(flaky_items(250, i5={"crash": True}), type="test.flaky", stop_on_error=True)

    batch = assert_counters_exact(batch)
    assert batch.status == S.STOPPED
    assert (batch.failed_items, batch.succeeded_items, batch.cancelled_items) == (1, 5, 244)
    chunks = Chunk.objects.filter(batch=batch).order_by("start_index")
    assert [(c.status, c.attempts) for c in chunks] == [("done", 1), ("done", 0), ("done", 0)]


def test_chunk_process__max_failures_not_exceeded_finishes(ran):
    batch = ran(
        flaky_items(30, i1={"crash": True}, i15={"crash": True}),
        type="test.flaky",
        max_failures=2,
    )

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert (batch.failed_items, batch.succeeded_items) == (2, 28)


def test_chunk_process__max_failures_exceeded_stops(ran):
    batch = ran(
        flaky_items(40, i1={"crash": True}, i12={"crash": True}, i23={"crash": True}),
        type="test.flaky",
        max_failures=2,
    )

    batch = assert_counters_exact(batch)
    assert batch.status == S.STOPPED
    # The third failure (item 23) trips the limit; no item after it starts.
    assert (batch.failed_items, batch.succeeded_items, batch.cancelled_items) == (3, 21, 16)
    assert statuses(batch)[24:] == ["cancelled"] * 16
    reason = BatchEvent.objects.get(batch=batch, kind="stop_requested").detail["reason"]
    assert reason == "more than 2 items failed"


def test_chunk_process__max_failures_zero_stops_on_the_first_failure(ran):
    batch = ran(flaky_items(20, i0={"crash": True}), type="test.flaky", max_failures=0)

    batch = assert_counters_exact(batch)
    assert batch.status == S.STOPPED
    assert batch.cancelled_items == 19


def test_chunk_process__atomic_batch_with_a_failure_fails_and_discards_results(ran):
    batch = ran(flaky_items(30, i4={"crash": True}), type="test.flaky", atomic=True)

    batch = assert_counters_exact(batch)
    assert batch.status == S.FAILED
    assert (batch.failed_items, batch.succeeded_items, batch.cancelled_items) == (1, 0, 29)
    assert statuses(batch) == ["cancelled"] * 4 + ["failed"] + ["cancelled"] * 25
    assert list(Item.objects.filter(batch=batch).exclude(result=None)) == []
    assert item(batch, 4).error_code == "exception"
    assert kinds(batch)[-3:] == ["stop_requested", "results_discarded", "failed"]
    assert BatchEvent.objects.get(batch=batch, kind="results_discarded").detail == {"items": 4}


def test_chunk_process__atomic_batch_without_failures_finishes_with_results(ran):
    batch = ran([{"payload": {"n": n}} for n in range(3)], atomic=True)

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert [item(batch, n).result for n in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]


# --- retries and crashes ------------------------------------------------------------------------


def test_run_item__transient_failures_are_retried_until_success(ran, backoffs):
    batch = ran([{"payload": {"transient_failures": 2, "v": 1}}])

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    done = item(batch, 0)
    assert (done.status, done.attempts) == ("succeeded", 3)
    assert done.result == {"transient_failures": 2, "v": 1}
    assert backoffs == [1, 2]


def test_run_item__last_allowed_attempt_still_succeeds(ran, backoffs):
    max_attempts = get_job_type("echo").max_attempts

    batch = ran([{"payload": {"transient_failures": max_attempts - 1}}])

    done = item(batch, 0)
    assert (done.status, done.attempts) == ("succeeded", max_attempts)


def test_run_item__more_transient_failures_than_max_attempts_give_up(ran, backoffs):
    max_attempts = get_job_type("echo").max_attempts

    batch = ran([{"payload": {"transient_failures": max_attempts}}, {"payload": {}}])

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    gave_up = item(batch, 0)
    assert (gave_up.status, gave_up.attempts, gave_up.error_code) == (
        "failed",
        max_attempts,
        "transient",
    )
    assert gave_up.error_message.startswith(f"gave up after {max_attempts} attempts")
    assert len(backoffs) == max_attempts - 1
    assert item(batch, 1).status == "succeeded"


def test_run_item__crashing_job_type_fails_only_that_item(ran):
    batch = ran(flaky_items(3, i1={"crash": True}), type="test.flaky")

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["succeeded", "failed", "succeeded"]
    crashed = item(batch, 1)
    assert crashed.error_code == "exception"
    assert "RuntimeError: boom" in crashed.error_message
    assert (crashed.attempts, crashed.result) == (1, None)


def test_run_item__unserializable_result_is_bad_result(ran):
    batch = ran(flaky_items(2, i0={"unserializable": True}), type="test.flaky")

    batch = assert_counters_exact(batch)
    bad = item(batch, 0)
    assert (bad.status, bad.error_code, bad.result) == ("failed", "bad_result", None)
    assert item(batch, 1).status == "succeeded"


def test_run_item__type_gone_at_run_time_fails_the_item(committed, settings):
    batch = committed([{"type": "test.flaky", "payload": {}}, {"payload": {}}])
    settings.BATCHSITE_JOB_TYPES = []

    assert engine.chunk_process(chunk_id=only_chunk(batch).pk) == "done"

    batch = assert_counters_exact(batch)
    assert statuses(batch) == ["failed", "succeeded"]
    assert item(batch, 0).error_code == "unknown_type"


def test_backoff__doubles_with_jitter_and_is_capped():
    echo = get_job_type("echo")

    first = engine.ItemRunner.backoff(echo, 1)
    third = engine.ItemRunner.backoff(echo, 3)
    late = engine.ItemRunner.backoff(echo, 30)

    assert echo.retry_backoff / 2 <= first <= echo.retry_backoff
    assert echo.retry_backoff * 2 <= third <= echo.retry_backoff * 4
    assert echo.retry_backoff_max / 2 <= late <= echo.retry_backoff_max


# --- claims, leases, redelivery -----------------------------------------------------------------


def test_chunk_claim__second_claim_is_refused_while_the_lease_is_valid(committed):
    chunk = only_chunk(committed([{"payload": {}}]))

    first = engine.chunk_claim(chunk_id=chunk.pk, owner="worker-a")
    second = engine.chunk_claim(chunk_id=chunk.pk, owner="worker-b")

    assert first is not None
    assert (first.status, first.lease_owner, first.attempts) == ("running", "worker-a", 1)
    assert first.lease_expires_at > timezone.now()
    assert second is None
    assert Chunk.objects.get(pk=chunk.pk).lease_owner == "worker-a"


def test_chunk_claim__expired_lease_can_be_taken_over(committed):
    chunk = only_chunk(committed([{"payload": {}}]))
    engine.chunk_claim(chunk_id=chunk.pk, owner="worker-a")
    expire_lease(chunk.pk)

    taken = engine.chunk_claim(chunk_id=chunk.pk, owner="worker-b")

    assert taken is not None
    assert (taken.lease_owner, taken.attempts) == ("worker-b", 2)
    assert taken.lease_expires_at > timezone.now()


def test_chunk_claim__done_chunk_is_never_claimed_again(ran):
    chunk = only_chunk(ran([{"payload": {}}]))
    expire_lease(chunk.pk)

    assert engine.chunk_claim(chunk_id=chunk.pk, owner="late") is None
    assert Chunk.objects.get(pk=chunk.pk).status == Chunk.Status.DONE


def test_chunk_process__second_delivery_of_a_finished_chunk_is_not_claimable(ran):
    batch = ran([{"payload": {"n": n}} for n in range(3)])
    chunk = only_chunk(batch)
    before = (batch.counts(), batch.last_seq, kinds(batch))

    assert engine.chunk_process(chunk_id=chunk.pk) == "not claimable"
    assert tasks.chunk_run(chunk.pk) == "not claimable"

    batch = assert_counters_exact(batch)
    assert (batch.counts(), batch.last_seq, kinds(batch)) == before
    assert Chunk.objects.get(pk=chunk.pk).attempts == 1


def test_chunk_process__delivery_while_another_worker_holds_the_lease_is_not_claimable(
    committed,
):
    batch = committed([{"payload": {}}])
    chunk = only_chunk(batch)
    engine.chunk_claim(chunk_id=chunk.pk, owner="worker-a")

    assert engine.chunk_process(chunk_id=chunk.pk) == "not claimable"

    assert statuses(batch) == ["queued"]
    assert Batch.objects.get(pk=batch.pk).status == S.COMMITTED


def test_chunk_runner__worker_whose_lease_was_taken_over_writes_nothing(committed, flaky_hooks):
    batch = committed(flaky_items(15, i0={"hook": "takeover"}), type="test.flaky")
    chunk_id = only_chunk(batch).pk
    runner_a = engine.ChunkRunner(
        chunk=engine.chunk_claim(chunk_id=chunk_id, owner="worker-a"), owner="worker-a"
    )
    taken = {}

    def takeover():
        # Worker A is mid-slice when its lease runs out and worker B claims the chunk.
        expire_lease(chunk_id)
        taken["chunk"] = engine.chunk_claim(chunk_id=chunk_id, owner="worker-b")

    flaky_hooks["takeover"] = takeover

    assert runner_a.run() == "lease lost"

    assert taken["chunk"] is not None
    batch = assert_counters_exact(batch)
    assert batch.status == S.RUNNING
    assert (batch.running_items, batch.queued_items, batch.succeeded_items) == (10, 5, 0)
    # A's reservation of seq numbers is void: B's claim dropped it, and nothing used it.
    assert Chunk.objects.get(pk=chunk_id).pending_seq is None
    assert not Item.objects.filter(batch=batch).exclude(result=None).exists()
    assert not Item.objects.filter(batch=batch, seq__isnull=False).exists()

    assert engine.ChunkRunner(chunk=taken["chunk"], owner="worker-b").run() == "done"

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert batch.succeeded_items == 15
    # Every item got its own seq from B; A's void reservation (1-10) is a gap, never reused.
    seqs = sorted(Item.objects.filter(batch=batch).values_list("seq", flat=True))
    assert seqs == list(range(11, 26))
    assert set(Item.objects.filter(batch=batch).values_list("attempts", flat=True)) == {1}
    assert kinds(batch).count("finished") == 1


def test_chunk_runner__batch_deleted_mid_run_writes_nothing(committed, flaky_hooks):
    batch = committed(flaky_items(15, i3={"hook": "delete"}), type="test.flaky")
    flaky_hooks["delete"] = lambda: services.batch_delete(batch=batch, actor="test")

    result = engine.chunk_process(chunk_id=only_chunk(batch).pk)

    assert result in ("lease lost", "batch deleted")
    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert not Item.objects.filter(batch_id=batch.pk).exists()


def test_chunk_run__task_never_raises(monkeypatch):
    def explode(*, chunk_id):
        raise RuntimeError("database went away")

    monkeypatch.setattr(runner, "chunk_process", explode)

    assert tasks.chunk_run(123) == "error"


# --- finalize -----------------------------------------------------------------------------------


def test_batch_finalize_if_done__runs_once(ran):
    batch = ran([{"payload": {}}, {"payload": {"fail": True}}])
    finished_at = batch.finished_at

    for _ in range(3):
        again = engine.batch_finalize_if_done(batch.pk)
        assert again.status == S.FINISHED

    batch = assert_counters_exact(batch)
    assert batch.finished_at == finished_at
    terminal = [kind for kind in kinds(batch) if kind in Batch.TERMINAL]
    assert terminal == ["finished"]


def test_batch_finalize_if_done__waits_while_a_chunk_is_queued_or_running(committed):
    batch = committed(flaky_items(150), type="test.flaky")
    first, second = Chunk.objects.filter(batch=batch).order_by("start_index")
    engine.chunk_claim(chunk_id=first.pk, owner="worker-a")

    assert engine.batch_finalize_if_done(batch.pk).status == S.COMMITTED
    engine.chunk_process(chunk_id=second.pk)

    batch = Batch.objects.get(pk=batch.pk)
    assert batch.status == S.RUNNING
    assert not any(kind in Batch.TERMINAL for kind in kinds(batch))
    assert (batch.succeeded_items, batch.queued_items) == (50, 100)


def test_batch_finalize_if_done__deleted_batch_is_none(committed):
    batch = committed([{"payload": {}}])
    services.batch_delete(batch=batch, actor="test")

    assert engine.batch_finalize_if_done(batch.pk) is None


def test_batch_finalize__cancels_leftover_items_of_a_lost_chunk(committed):
    batch = committed(flaky_items(3), type="test.flaky")
    # The chunk's task was lost and the chunk closed without running its items.
    Chunk.objects.filter(batch=batch).update(status=Chunk.Status.DONE)

    engine.batch_finalize_if_done(batch.pk)

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["cancelled"] * 3


# --- counters -----------------------------------------------------------------------------------


def test_counters_verify__agreeing_counters_are_left_alone(ran):
    batch = ran([{"payload": {}}])

    assert engine.counters_verify(batch=batch) is True

    assert "counters_repaired" not in kinds(batch)


def test_counters_verify__repairs_a_corrupted_counter(ran):
    batch = ran([{"payload": {}}, {"payload": {"fail": True}}])
    Batch.objects.filter(pk=batch.pk).update(succeeded_items=99, queued_items=-3)

    assert engine.counters_verify(batch=batch) is False

    batch = assert_counters_exact(batch)
    assert (batch.succeeded_items, batch.failed_items, batch.queued_items) == (1, 1, 0)
    event = BatchEvent.objects.get(batch=batch, kind="counters_repaired")
    assert event.detail["was"]["succeeded_items"] == 99
    assert event.detail["now"]["succeeded_items"] == 1


def test_batch_finalize__repairs_counters_before_ending(committed):
    batch = committed([{"payload": {}}, {"payload": {}}])
    chunk = only_chunk(batch)
    Batch.objects.filter(pk=batch.pk).update(total_items=7)

    engine.chunk_process(chunk_id=chunk.pk)

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert batch.total_items == 2
    assert kinds(batch)[-2:] == ["counters_repaired", "finished"]


# --- chunk_abandon (the sweep's last resort for chunks whose workers keep dying) --------------


class WorkerKilled(BaseException):
    """Stands for a worker process killed mid-slice: nothing in the engine catches it."""


def crash_mid_slice(committed_batch: Batch, flaky_hooks) -> Chunk:
    """Run the batch's only chunk under a worker that dies in its first slice."""
    chunk_id = only_chunk(committed_batch).pk
    runner = engine.ChunkRunner(
        chunk=engine.chunk_claim(chunk_id=chunk_id, owner="doomed"), owner="doomed"
    )

    def die():
        raise WorkerKilled

    flaky_hooks["die"] = die
    with pytest.raises(WorkerKilled):
        runner.run()
    return Chunk.objects.get(pk=chunk_id)


def test_chunk_abandon__fails_items_in_flight_and_requeues_the_rest(
    committed, flaky_hooks, django_capture_on_commit_callbacks
):
    batch = committed(flaky_items(15, i2={"hook": "die"}), type="test.flaky")
    chunk = crash_mid_slice(batch, flaky_hooks)
    assert Batch.objects.get(pk=batch.pk).running_items == 10
    expire_lease(chunk.pk)

    with django_capture_on_commit_callbacks(execute=True):
        failed = engine.chunk_abandon(chunk_id=chunk.pk, reason="the worker died 5 times")

    assert failed == 10
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["failed"] * 10 + ["succeeded"] * 5
    lost = item(batch, 0)
    assert (lost.error_code, lost.error_message) == ("worker_lost", "the worker died 5 times")


def test_chunk_abandon__an_item_that_kills_every_worker_is_among_those_failed(
    committed, monkeypatch, django_capture_on_commit_callbacks
):
    # Item 15 kills its worker each time. The first worker dies in its second slice,
    # which a quick first slice left unmarked; the next takes the chunk over and marks
    # its first slice, the one with item 15, `running`.
    monkeypatch.setattr(runner, "MARK_RUNNING_AFTER", 0.5)  # the first slice counts as quick
    original = Flaky.process

    def process(self, payload, file, context):
        if payload["n"] == 15:
            raise WorkerKilled
        return original(self, payload, file, context)

    monkeypatch.setattr(Flaky, "process", process)
    batch = committed(flaky_items(30), type="test.flaky")
    chunk_id = only_chunk(batch).pk
    for owner in ("first", "second"):
        worker = engine.ChunkRunner(
            chunk=engine.chunk_claim(chunk_id=chunk_id, owner=owner), owner=owner
        )
        with pytest.raises(WorkerKilled):
            worker.run()
        assert_counters_exact(batch)
        expire_lease(chunk_id)

    with django_capture_on_commit_callbacks(execute=True):
        failed = engine.chunk_abandon(chunk_id=chunk_id, reason="the worker died 2 times")

    assert failed == 10
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["succeeded"] * 10 + ["failed"] * 10 + ["succeeded"] * 10
    assert item(batch, 15).error_code == "worker_lost"


def test_chunk_abandon__worker_lost_item_trips_stop_on_error(
    committed, flaky_hooks, django_capture_on_commit_callbacks
):
    batch = committed(flaky_items(15, i2={"hook": "die"}), type="test.flaky", stop_on_error=True)
    chunk = crash_mid_slice(batch, flaky_hooks)
    expire_lease(chunk.pk)

    with django_capture_on_commit_callbacks(execute=True):
        engine.chunk_abandon(chunk_id=chunk.pk, reason="the worker died 5 times")

    # A failed item stops a stop_on_error batch, whatever made it fail: the items not yet
    # run are cancelled rather than run.
    batch = assert_counters_exact(batch)
    assert batch.status == S.STOPPED
    assert statuses(batch) == ["failed"] * 10 + ["cancelled"] * 5


def test_chunk_abandon__chunk_with_a_live_lease_is_left_alone(
    committed, django_capture_on_commit_callbacks
):
    # The sweep picked the chunk while its lease had expired, but a worker claimed it
    # before chunk_abandon ran: that worker is alive and its items must not be failed.
    batch = committed(flaky_items(5), type="test.flaky")
    chunk = only_chunk(batch)
    engine.chunk_claim(chunk_id=chunk.pk, owner="worker-a")
    Item.objects.filter(batch=batch).update(status=Item.Status.RUNNING)
    Batch.objects.filter(pk=batch.pk).update(queued_items=0, running_items=5)

    with django_capture_on_commit_callbacks():
        failed = engine.chunk_abandon(chunk_id=chunk.pk, reason="the worker died 5 times")

    assert failed == 0
    assert statuses(batch) == ["running"] * 5
    chunk.refresh_from_db()
    assert (chunk.status, chunk.lease_owner) == ("running", "worker-a")


# --- stopping at the item, pausing mid-chunk ----------------------------------------------------


def test_chunk_process__pause_mid_chunk_hands_the_chunk_back_and_resume_finishes_it(
    ran, account, flaky_hooks, django_capture_on_commit_callbacks
):
    def pause():
        services.batch_pause(batch=Batch.objects.get(account=account), actor="erin")

    flaky_hooks["pause"] = pause
    items = [{"payload": {"hook": "pause", "n": 3} if n == 3 else {"n": n}} for n in range(30)]

    batch = ran(items, type="test.flaky")

    # One chunk (test.flaky: 100 items a chunk): the worker stopped after the item in flight.
    batch = assert_counters_exact(batch)
    assert batch.status == S.RUNNING
    assert statuses(batch) == ["succeeded"] * 4 + ["queued"] * 26
    chunk = Chunk.objects.get(batch=batch)
    assert (chunk.status, chunk.enqueued_at, chunk.lease_owner) == ("queued", None, "")
    assert chunk.attempts == 0

    with django_capture_on_commit_callbacks(execute=True):
        services.batch_resume(batch=batch, actor="erin")

    batch = assert_counters_exact(Batch.objects.get(pk=batch.pk))
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["succeeded"] * 30
    assert set(Item.objects.filter(batch=batch).values_list("attempts", flat=True)) == {1}


def test_chunk_process__a_nudge_without_a_stop_lets_the_worker_go_on(ran, account, flaky_hooks):
    flaky_hooks["nudge"] = lambda: nudges.batch_nudge(Batch.objects.get(account=account).pk)
    items = [{"payload": {"hook": "nudge"} if n == 2 else {}} for n in range(20)]

    batch = ran(items, type="test.flaky")

    assert assert_counters_exact(batch).status == S.FINISHED
    assert statuses(batch) == ["succeeded"] * 20


# --- time limits ---------------------------------------------------------------------------------


def test_chunk_process__an_item_that_spins_past_its_limit_fails_alone(ran):
    items = [{"payload": {"hang": n == 2, "n": n}} for n in range(6)]

    batch = ran(items, type="test.hang")

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["succeeded"] * 2 + ["failed"] + ["succeeded"] * 3
    hung = item(batch, 2)
    assert (hung.error_code, hung.attempts) == ("timeout", 1)
    assert hung.error_message == "took longer than its time limit of 0.5s"
    # Nothing else in the slice ran twice.
    assert set(Item.objects.filter(batch=batch).values_list("attempts", flat=True)) == {1}


def test_chunk_process__a_blocked_item_times_out_and_is_retried_when_timeouts_are_transient(
    ran, backoffs
):
    items = [{"payload": {"block": n == 1, "n": n}} for n in range(3)]

    batch = ran(items, type="test.block")

    batch = assert_counters_exact(batch)
    assert statuses(batch) == ["succeeded", "failed", "succeeded"]
    blocked = item(batch, 1)
    assert (blocked.error_code, blocked.attempts) == ("timeout", 2)
    assert blocked.error_message == (
        "gave up after 2 attempts: took longer than its time limit of 0.5s"
    )
    assert backoffs == [1]


def test_chunk_process__a_payload_may_ask_for_a_shorter_limit(ran):
    items = [{"payload": {"hang": True, "time_limit": 0.2}}]

    batch = ran(items, type="test.hang")

    assert item(batch, 0).error_message == "took longer than its time limit of 0.2s"


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (0, "must be more than 0"),
        (-1, "must be more than 0"),
        (5.5, "must be at most 5"),
        (True, "must be a number"),
        ("1", "must be a number"),
    ],
)
def test_items_add__a_time_limit_outside_the_types_bounds_is_refused(client_a, limit, message):
    response = client_a.post(
        "/api/v1/batches/",
        {"type": "test.hang", "items": [{"payload": {"time_limit": limit}}]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "index": 0,
            "field": "payload.time_limit",
            "code": "invalid",
            "message": message,
        }
    ]
    assert not Batch.objects.exists()


# --- chunks follow the items' types --------------------------------------------------------------


def test_chunks_plan__a_mixed_batch_cuts_slow_items_into_small_chunks(committed, settings):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["127.0.0.1"]
    # 300 echo items (5,000 a chunk) then 120 http.request items (50 a chunk), then echo.
    url = {"url": "http://127.0.0.1:9/", "method": "GET"}
    items = (
        [{"payload": {"n": n}} for n in range(300)]
        + [{"type": "http.request", "payload": url} for _ in range(120)]
        + [{"payload": {"n": n}} for n in range(100)]
    )

    batch = committed(items)

    chunks = list(
        Chunk.objects.filter(batch=batch)
        .order_by("start_index")
        .values_list("start_index", "end_index", "slice_size")
    )
    # The echo run weighs 300/5000 of a chunk, so the first chunk takes 47 http items
    # with it; then 50 http items a chunk; the last holds 23 http items and the echo tail.
    assert chunks == [(0, 347, 10), (347, 397, 10), (397, 520, 10)]
    covered = {i for start, end, _ in chunks for i in range(start, end)}
    assert covered == set(range(520))


def test_chunks_plan__a_batch_of_one_type_uses_that_types_sizes_not_the_batchs(committed):
    # An email.send batch whose items are all echo: chunks of echo's size.
    batch = committed(
        [{"type": "echo", "payload": {"n": n}} for n in range(10_000)], type="email.send"
    )

    chunks = list(
        Chunk.objects.filter(batch=batch)
        .order_by("start_index")
        .values_list("start_index", "end_index", "slice_size")
    )
    assert chunks == [(0, 5000, 500), (5000, 10000, 500)]
