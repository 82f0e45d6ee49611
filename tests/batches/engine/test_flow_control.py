"""Pause and resume, max_concurrency and priority: the services, the API and the claim gate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from batches import engine, services, tasks
from batches.engine import sweep
from batches.models import Batch, BatchEvent, Chunk, Item, Lock
from tests.helpers import assert_counters_exact, kinds, recount

S = Batch.Status
BATCHES = "/api/v1/batches/"


def paced_items(count: int) -> list[dict]:
    return [{"payload": {"n": n}} for n in range(count)]


@pytest.fixture(autouse=True)
def _exec_log(tmp_path, monkeypatch, settings):
    # test.paced logs every execution; slices end by size, never by the clock.
    monkeypatch.setenv("BATCHSITE_TEST_EXEC_LOG", str(tmp_path / "exec.log"))
    settings.BATCHSITE_SLICE_SECONDS = 3600


@pytest.fixture
def committed(account, django_capture_on_commit_callbacks):
    """Create and commit a test.paced batch (5 items a chunk) without running it."""

    def make(count: int, **options) -> Batch:
        with django_capture_on_commit_callbacks(execute=True):
            batch, _ = services.batch_create(
                account=account,
                actor="test",
                type="test.paced",
                items=paced_items(count),
                options=options,
                commit=True,
            )
        return Batch.objects.get(pk=batch.pk)

    return make


def statuses(batch: Batch) -> dict[str, int]:
    """Count the batch's items by status, leaving out statuses no item has."""
    return {status: n for status, n in recount(batch).items() if n and status != "total"}


def chunk_ids(batch: Batch) -> list[int]:
    return list(
        Chunk.objects.filter(batch=batch).order_by("start_index").values_list("pk", flat=True)
    )


def held(batch: Batch) -> list[int]:
    chunks = Chunk.objects.filter(batch=batch, status=Chunk.Status.QUEUED, enqueued_at=None)
    return list(chunks.order_by("start_index").values_list("pk", flat=True))


def sent(batch: Batch) -> list[int]:
    chunks = Chunk.objects.filter(batch=batch, status=Chunk.Status.QUEUED).exclude(enqueued_at=None)
    return list(chunks.order_by("start_index").values_list("pk", flat=True))


# --- pause and resume: the services -------------------------------------------------------------


def test_batch_pause__holds_every_chunk_a_worker_is_handed(committed, broker_queue):
    batch = committed(15)
    services.batch_pause(batch=batch, actor="test")

    outcomes = [engine.chunk_process(chunk_id=pk) for pk in chunk_ids(batch)]

    assert outcomes == ["not claimable"] * 3
    assert held(batch) == chunk_ids(batch)
    assert statuses(batch) == {"queued": 15}
    batch.refresh_from_db()
    assert batch.status == S.COMMITTED
    assert batch.paused_at is not None
    assert kinds(batch)[-1] == "paused"


def test_batch_pause__twice_is_one_pause(committed, broker_queue):
    batch = committed(5)

    first = services.batch_pause(batch=batch, actor="test").paused_at
    second = services.batch_pause(batch=batch, actor="test").paused_at

    assert first == second
    assert kinds(batch).count("paused") == 1


def test_batch_pause__the_chunk_in_flight_is_handed_back_held(committed, broker_queue):
    batch = committed(10)
    first, second = chunk_ids(batch)
    chunk = engine.chunk_claim(chunk_id=first, owner="worker-1")
    services.batch_pause(batch=batch, actor="test")

    assert engine.ChunkRunner(chunk=chunk, owner="worker-1").run() == "paused"
    assert engine.chunk_process(chunk_id=second) == "not claimable"

    assert statuses(batch) == {"queued": 10}
    assert held(batch) == [first, second]
    assert Chunk.objects.get(pk=first).lease_owner == ""
    batch.refresh_from_db()
    assert batch.status == S.COMMITTED
    assert_counters_exact(batch)


def test_batch_resume__runs_what_the_pause_held_to_the_end(committed, broker_queue, settings):
    batch = committed(15)
    services.batch_pause(batch=batch, actor="test")
    for pk in chunk_ids(batch):
        engine.chunk_process(chunk_id=pk)
    assert len(held(batch)) == 3

    broker_queue.purge_queue()
    services.batch_resume(batch=batch, actor="test")
    engine.chunks_release(batch.pk)  # what resume's on_commit does
    for pk in sent(batch):
        engine.chunk_process(chunk_id=pk)

    batch.refresh_from_db()
    assert batch.status == S.FINISHED
    assert batch.paused_at is None
    assert statuses(batch) == {"succeeded": 15}
    assert "resumed" in kinds(batch)
    assert_counters_exact(batch)


def test_batch_resume__of_a_batch_that_is_not_paused_changes_nothing(committed, broker_queue):
    batch = committed(5)

    services.batch_resume(batch=batch, actor="test")

    assert "resumed" not in kinds(batch)


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pause_and_resume__refuse_a_batch_not_yet_committed(account, action):
    batch, _ = services.batch_create(account=account, actor="test", items=paced_items(2))

    with pytest.raises(services.BatchNotCommitted):
        getattr(services, f"batch_{action}")(batch=batch, actor="test")


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pause_and_resume__refuse_an_ended_batch(account, action):
    batch, _ = services.batch_create(account=account, actor="test", items=paced_items(2))
    services.batch_cancel(batch=batch, actor="test")

    with pytest.raises(services.BatchFinished):
        getattr(services, f"batch_{action}")(batch=batch, actor="test")


def test_batch_cancel__of_a_paused_batch_ends_it_and_clears_the_pause(committed, broker_queue):
    batch = committed(10)
    services.batch_pause(batch=batch, actor="test")

    services.batch_cancel(batch=batch, actor="test")

    batch.refresh_from_db()
    assert batch.status == S.CANCELLED
    assert batch.paused_at is None
    assert statuses(batch) == {"cancelled": 10}
    assert not Chunk.objects.filter(batch=batch).exclude(status=Chunk.Status.DONE).exists()


def test_sweep__does_not_release_a_paused_batch_and_does_after_the_resume(
    committed, broker_queue, django_capture_on_commit_callbacks
):
    Lock.objects.create(name=sweep.SWEEP_LOCK, owner="", expires_at=timezone.now())
    batch = committed(10)
    services.batch_pause(batch=batch, actor="test")
    for pk in chunk_ids(batch):
        engine.chunk_process(chunk_id=pk)

    sweep.sweep_run()
    assert len(held(batch)) == 2

    Batch.objects.filter(pk=batch.pk).update(paused_at=None)  # a resume whose release was lost
    sweep.sweep_run()
    assert held(batch) == []
    assert len(sent(batch)) == 2


def test_batch_deadline__still_ends_a_paused_batch(
    committed, broker_queue, django_capture_on_commit_callbacks
):
    Lock.objects.create(name=sweep.SWEEP_LOCK, owner="", expires_at=timezone.now())
    batch = committed(10, deadline=timezone.now() + timedelta(hours=1))
    services.batch_pause(batch=batch, actor="test")
    Batch.objects.filter(pk=batch.pk).update(deadline=timezone.now())

    sweep.sweep_run()

    batch.refresh_from_db()
    assert batch.status == S.EXPIRED
    assert statuses(batch) == {"cancelled": 10}


# --- pause and resume: the API ------------------------------------------------------------------


def test_api_pause_and_resume__answer_with_the_batch(client_a, committed, broker_queue):
    batch = committed(5)

    paused = client_a.post(f"{BATCHES}{batch.pk}/pause/")
    resumed = client_a.post(f"{BATCHES}{batch.pk}/resume/")

    assert paused.status_code == 200
    assert paused.json()["paused"] is True
    assert paused.json()["status"] == "committed"
    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    assert paused.json()["links"]["pause"].endswith(f"/api/v1/batches/{batch.pk}/pause/")
    assert paused.json()["links"]["resume"].endswith(f"/api/v1/batches/{batch.pk}/resume/")


def test_api_pause__of_an_open_batch_is_a_409_problem(client_a, account):
    batch, _ = services.batch_create(account=account, actor="test", items=paced_items(2))

    response = client_a.post(f"{BATCHES}{batch.pk}/pause/")

    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "batch_not_committed"
    assert Batch.objects.get(pk=batch.pk).paused_at is None


def test_api_pause__of_an_ended_batch_is_batch_finished(client_a, account):
    batch, _ = services.batch_create(account=account, actor="test", items=paced_items(2))
    services.batch_cancel(batch=batch, actor="test")

    response = client_a.post(f"{BATCHES}{batch.pk}/pause/")

    assert response.status_code == 409
    assert response.json()["code"] == "batch_finished"


def test_api_pause__of_another_accounts_batch_is_404(client_b, committed, broker_queue):
    batch = committed(5)

    response = client_b.post(f"{BATCHES}{batch.pk}/pause/")

    assert response.status_code == 404
    assert Batch.objects.get(pk=batch.pk).paused_at is None
    assert "paused" not in kinds(batch)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"priority": 101}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 1.5}, "max_concurrency"),
    ],
)
def test_api_create__refuses_bad_priority_and_max_concurrency(client_a, options, field):
    response = client_a.post(BATCHES, {"options": options}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert any(field in error["field"] for error in response.json()["errors"])
    assert not Batch.objects.exists()


# --- max_concurrency ----------------------------------------------------------------------------


def test_commit__with_max_concurrency_sends_only_that_many_chunks(committed, broker_queue):
    batch = committed(25, max_concurrency=2)

    assert len(sent(batch)) == 2
    assert len(held(batch)) == 3
    assert broker_queue.queue_size() == 2


def test_chunk_claim__beyond_max_concurrency_holds_the_chunk(committed, broker_queue):
    batch = committed(15, max_concurrency=1)
    first, second, third = chunk_ids(batch)

    assert engine.chunk_claim(chunk_id=first, owner="worker-1") is not None
    assert engine.chunk_claim(chunk_id=second, owner="worker-2") is None

    assert Chunk.objects.get(pk=second).status == Chunk.Status.QUEUED
    assert set(held(batch)) == {second, third}


def test_chunk_end__releases_the_next_held_chunk(committed, broker_queue):
    batch = committed(15, max_concurrency=1)
    first, second, third = chunk_ids(batch)
    broker_queue.purge_queue()

    engine.chunk_process(chunk_id=first)

    assert sent(batch) == [second]
    assert held(batch) == [third]
    assert broker_queue.queue_size() == 1


def test_max_concurrency__one_batch_runs_to_the_end_one_chunk_at_a_time(committed, broker_queue):
    batch = committed(20, max_concurrency=1)
    running_seen = []
    while sent(batch):
        (pk,) = sent(batch)
        running_seen.append(Chunk.objects.filter(batch=batch, status="running").count())
        engine.chunk_process(chunk_id=pk)

    batch.refresh_from_db()
    assert batch.status == S.FINISHED
    assert statuses(batch) == {"succeeded": 20}
    assert running_seen == [0, 0, 0, 0]
    assert_counters_exact(batch)


def test_chunk_claim__takes_over_an_expired_lease_even_at_the_limit(committed, broker_queue):
    batch = committed(10, max_concurrency=1)
    first, _ = chunk_ids(batch)
    engine.chunk_claim(chunk_id=first, owner="dead-worker")
    Chunk.objects.filter(pk=first).update(lease_expires_at=timezone.now())

    chunk = engine.chunk_claim(chunk_id=first, owner="worker-2")

    assert chunk is not None
    assert chunk.lease_owner == "worker-2"


def test_chunks_release__is_a_no_op_while_paused_and_before_not_before(committed, broker_queue):
    later = committed(10, not_before=timezone.now() + timedelta(hours=1))
    paused = committed(10)
    services.batch_pause(batch=paused, actor="test")
    for pk in chunk_ids(paused):
        engine.chunk_process(chunk_id=pk)

    assert engine.chunks_release(later.pk) == 0
    assert engine.chunks_release(paused.pk) == 0
    assert len(held(later)) == 2
    assert len(held(paused)) == 2


# --- priority -----------------------------------------------------------------------------------


def test_chunk_claim__takes_a_higher_priority_chunk_first(committed, broker_queue):
    low = committed(10)
    high = committed(10, priority=5)
    low_first = chunk_ids(low)[0]
    broker_queue.purge_queue()

    chunk = engine.chunk_claim(chunk_id=low_first, owner="worker-1")

    assert chunk.batch_id == high.pk
    assert chunk.start_index == 0
    # The low chunk's task was used up, so it is sent again.
    assert Chunk.objects.get(pk=low_first).status == Chunk.Status.QUEUED
    assert broker_queue.queue_size() == 1


def test_chunk_claim__keeps_its_own_chunk_when_nothing_ranks_higher(committed, broker_queue):
    high = committed(10, priority=5)
    committed(10, priority=-3)

    chunk = engine.chunk_claim(chunk_id=chunk_ids(high)[1], owner="worker-1")

    assert chunk.pk == chunk_ids(high)[1]


def test_chunk_claim__skips_higher_priority_batches_that_are_paused(committed, broker_queue):
    low = committed(10)
    high = committed(10, priority=5)
    services.batch_pause(batch=high, actor="test")

    chunk = engine.chunk_claim(chunk_id=chunk_ids(low)[0], owner="worker-1")

    assert chunk.batch_id == low.pk


def test_chunk_claim__priority_respects_the_higher_batchs_limit(committed, broker_queue):
    low = committed(10)
    high = committed(10, priority=5, max_concurrency=1)
    assert engine.chunk_claim(chunk_id=chunk_ids(high)[0], owner="worker-1").batch_id == high.pk

    chunk = engine.chunk_claim(chunk_id=chunk_ids(low)[0], owner="worker-2")

    assert chunk.batch_id == low.pk


def test_priority__high_batch_finishes_before_a_low_one_committed_earlier(committed, broker_queue):
    low = committed(20)
    high = committed(10, priority=1)

    # One worker takes the tasks in the order they were sent: the low batch's come first.
    for pk in chunk_ids(low)[:2]:
        engine.chunk_process(chunk_id=pk)

    assert Batch.objects.get(pk=high.pk).status == S.FINISHED
    assert statuses(low) == {"queued": 20}
    assert sent(low) == chunk_ids(low)


def test_batch_events__pause_and_resume_are_on_the_timeline(committed, broker_queue):
    batch = committed(5)

    services.batch_pause(batch=batch, actor="key:abc")
    services.batch_resume(batch=batch, actor="key:abc")

    events = BatchEvent.objects.filter(batch=batch, kind__in=["paused", "resumed"])
    assert [(e.kind, e.actor) for e in events] == [("paused", "key:abc"), ("resumed", "key:abc")]


def test_chunk_claim__of_an_unlimited_batch_takes_no_batch_lock(committed, broker_queue):
    from django.test.utils import CaptureQueriesContext

    batch = committed(5)

    with CaptureQueriesContext(connection) as queries:
        engine.chunk_claim(chunk_id=chunk_ids(batch)[0], owner="worker-1")

    assert not any("FOR UPDATE" in q["sql"] for q in queries.captured_queries)


# --- a worker done with its chunk takes chunks whose tasks wait elsewhere ----------------------


def test_chunk_run__then_takes_the_chunks_whose_tasks_still_wait(committed, broker_queue):
    batch = committed(15)
    first, *_ = chunk_ids(batch)

    # The other two tasks sit in the broker (as in another cluster's prefetch queue).
    outcome = tasks.chunk_run(first)

    assert outcome == "done; then 2 waiting chunk(s)"
    batch = assert_counters_exact(Batch.objects.get(pk=batch.pk))
    assert batch.status == S.FINISHED
    assert statuses(batch) == {"succeeded": 15}
    # Each item ran once; the three tasks still in the broker (this test ran the first
    # one's function itself) find nothing left to do.
    assert Item.objects.filter(batch=batch).exclude(attempts=1).count() == 0
    assert broker_queue.queue_size() == 3
    assert [engine.chunk_process(chunk_id=pk) for pk in chunk_ids(batch)[1:]] == [
        "not claimable"
    ] * 2


def test_chunk_run__takes_waiting_chunks_by_priority_and_leaves_held_ones(committed, broker_queue):
    low = committed(5)
    paused = committed(5)
    services.batch_pause(batch=paused, actor="test")
    limited = committed(15, max_concurrency=1)
    high = committed(5, priority=3)

    outcome = tasks.chunk_run(chunk_ids(low)[0])

    # Its own chunk first (the claim prefers the higher batch's: that one, then its own),
    # then the limited batch's chunks one after another as each frees its slot.
    assert outcome.startswith("done; then ")
    assert Batch.objects.get(pk=high.pk).status == S.FINISHED
    assert Batch.objects.get(pk=low.pk).status == S.FINISHED
    assert Batch.objects.get(pk=limited.pk).status == S.FINISHED
    assert statuses(paused) == {"queued": 5}
    assert sent(paused) == chunk_ids(paused)  # untouched: its task will hold it


def test_chunk_run__stops_taking_chunks_once_a_third_of_the_timeout_passed(
    committed, broker_queue, settings
):
    settings.BATCHSITE_TASK_TIMEOUT = 0
    batch = committed(15)

    outcome = tasks.chunk_run(chunk_ids(batch)[0])

    assert outcome == "done"
    assert sent(batch) == chunk_ids(batch)[1:]


def test_chunk_run__takes_over_a_chunk_whose_worker_lease_ran_out_without_the_sweep(
    committed, broker_queue, settings
):
    settings.BATCHSITE_CHUNK_MAX_ATTEMPTS = 3
    batch = committed(15)
    first, second, third = chunk_ids(batch)
    # A worker took the second chunk, ran an item of it, and was cut off: its lease ran out.
    engine.chunk_claim(chunk_id=second, owner="cut-off")
    Item.objects.filter(batch=batch, index=5).update(status=S.RUNNING)
    Chunk.objects.filter(pk=second).update(
        running_delta=1, queued_delta=-1, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    # The third one's workers died too often: the sweep must fail what they had in flight.
    engine.chunk_claim(chunk_id=third, owner="dead")
    Chunk.objects.filter(pk=third).update(
        attempts=3, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    outcome = tasks.chunk_run(first)

    assert outcome == "done; then 1 waiting chunk(s)"
    assert Chunk.objects.get(pk=second).status == Chunk.Status.DONE
    assert Chunk.objects.get(pk=third).lease_owner == "dead"
    assert statuses(batch) == {"succeeded": 10, "queued": 5}
