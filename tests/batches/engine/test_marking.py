"""Items of quick slices go from `queued` to their outcome in one write; slow ones show `running`.

The first slice of a claim is marked `running` as it is taken, and so is every slice that
follows one which ran at least MARK_RUNNING_AFTER; the items of other slices stay `queued`
until their outcomes land. Either way the counters equal a recount at every moment.
Quick full slices grow, so quick items share a slice's fixed costs among more of them.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from batches import engine, services
from batches.engine import planning, runner
from batches.models import Batch, Chunk, Item
from tests.helpers import assert_counters_exact, recount
from tests.jobtypes import Flaky

S = Item.Status


@pytest.fixture
def seen(monkeypatch):
    """Record, as each test.flaky item runs, its stored status and whether counts hold."""
    seen: dict[int, tuple[str, bool]] = {}
    original = Flaky.process

    def process(self, payload, file, context):
        batch_id, index = context.label.split("#")  # the worker labels items so
        item = Item.objects.get(batch_id=batch_id, index=int(index))
        batch = Batch.objects.get(pk=item.batch_id)
        seen[item.index] = (item.status, batch.counts() == recount(batch))
        return original(self, payload, file, context)

    monkeypatch.setattr(Flaky, "process", process)
    return seen


def flaky_items(count: int, *, slow: range = range(0)) -> list[dict]:
    return [{"payload": {"n": n, **({"sleep_ms": 60} if n in slow else {})}} for n in range(count)]


@pytest.fixture
def fixed_slices(monkeypatch):
    monkeypatch.setattr(runner, "SLICE_GROWTH", 1)


def test_marking__first_and_after_slow_slices_only(ran, seen, fixed_slices, monkeypatch):
    # Slices of ten: the first is marked; the second follows a quick one; the third
    # follows one of ten 60 ms items (600 ms, over MARK_RUNNING_AFTER). The threshold is
    # raised so that a busy machine cannot make a quick slice look slow.
    monkeypatch.setattr(runner, "MARK_RUNNING_AFTER", 0.5)
    batch = ran(flaky_items(30, slow=range(10, 20)), type="test.flaky")

    statuses = {index: status for index, (status, _) in seen.items()}
    assert statuses == {
        **dict.fromkeys(range(10), S.RUNNING),
        **dict.fromkeys(range(10, 20), S.QUEUED),
        **dict.fromkeys(range(20, 30), S.RUNNING),
    }
    assert all(counts_held for _, counts_held in seen.values())
    batch = assert_counters_exact(batch)
    assert batch.status == Batch.Status.FINISHED
    items = Item.objects.filter(batch=batch)
    assert {item.status for item in items} == {S.SUCCEEDED}
    # Every item, marked or not, has when it started and when it ended.
    assert all(item.started_at and item.started_at <= item.finished_at for item in items)


def test_marking__a_cancel_keeps_what_a_quick_slice_ran(
    ran, flaky_hooks, fixed_slices, monkeypatch
):
    monkeypatch.setattr(runner, "MARK_RUNNING_AFTER", 0.5)  # the first slice counts as quick
    # The cancel comes while item 15 runs, in the second (unmarked) slice: items 10-15
    # are still `queued` in their rows, yet they ran and keep their results.
    items = flaky_items(30)
    items[15]["payload"]["hook"] = "cancel"
    flaky_hooks["cancel"] = lambda: services.batch_cancel(
        batch=Item.objects.get(payload__n=15).batch, actor="test"
    )

    batch = ran(items, type="test.flaky")

    batch = assert_counters_exact(batch)
    assert batch.status == Batch.Status.CANCELLED
    statuses = dict(Item.objects.filter(batch=batch).values_list("index", "status"))
    assert statuses == {
        **dict.fromkeys(range(16), S.SUCCEEDED),
        **dict.fromkeys(range(16, 30), S.CANCELLED),
    }
    assert Item.objects.get(batch=batch, index=15).result == {"n": 15, "hook": "cancel"}


def test_slice_growth__quick_full_slices_double_up_to_the_cap(ran, monkeypatch):
    monkeypatch.setattr(runner, "SLICE_GROW_BELOW", 0.5)
    monkeypatch.setattr(runner, "SLICE_GROWTH", 4)  # slices of 40 at most
    sizes: list[int] = []
    original = runner.ChunkRunner._run_slice

    def run_slice(self, rows):
        sizes.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(runner.ChunkRunner, "_run_slice", run_slice)
    # Two chunks of 100 (slices of 10 for test.flaky). Item 15 takes longer than
    # SLICE_GROW_BELOW, so the slice after its own does not grow. The worker runs the
    # second chunk after the first, starting at the size the first one's slices reached.
    items = flaky_items(200)
    items[15]["payload"]["sleep_ms"] = 600

    batch = ran(items, type="test.flaky")

    first_chunk, second_chunk = sizes[:5], sizes[5:]
    assert first_chunk == [10, 20, 20, 40, 10]
    assert second_chunk == [40, 40, 20]
    batch = assert_counters_exact(batch)
    assert batch.status == Batch.Status.FINISHED
    assert batch.succeeded_items == 200


@pytest.mark.parametrize(
    ("same_batch", "base_size", "starts_at", "marks"),
    [(True, 10, 40, False), (False, 10, 10, True), (True, 20, 10, True)],
)
def test_pace__a_chunk_starts_where_the_last_one_of_its_batch_and_size_ended(
    committed_flaky, same_batch, base_size, starts_at, marks
):
    chunk = Chunk.objects.filter(batch=committed_flaky).first()
    pace = runner.Pace(
        batch_id=committed_flaky.pk if same_batch else uuid.uuid4(),
        base_size=base_size,
        slice_size=40,
        mark_running=False,
    )

    chunk_runner = runner.ChunkRunner(chunk=chunk, owner="w", pace=pace)

    assert (chunk_runner.slice_size, chunk_runner.mark_running) == (starts_at, marks)


def test_cancel__cancels_the_queued_items_of_a_chunk_whose_worker_died(committed_flaky):
    # The worker claimed the chunk and died: its lease ran out, so no one can still be
    # running those items, and a cancel takes them at once, as every unstarted item.
    batch = committed_flaky
    chunk = Chunk.objects.get(batch=batch)
    assert engine.chunk_claim(chunk_id=chunk.pk, owner="dead") is not None
    Chunk.objects.filter(pk=chunk.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    services.batch_cancel(batch=batch, actor="test")

    batch = assert_counters_exact(batch)
    assert batch.status == Batch.Status.CANCELLING  # the chunk is still to be taken back
    assert set(Item.objects.filter(batch=batch).values_list("status", flat=True)) == {S.CANCELLED}
    # The dead worker's lease is lost for good: it cannot renew it and write over them.
    assert not engine.lease_renew(chunk=chunk, owner="dead")


@pytest.fixture
def committed_flaky(account, django_capture_on_commit_callbacks):
    with mock.patch.object(planning, "chunks_enqueue"):
        batch, _ = services.batch_create(
            account=account, actor="test", type="test.flaky", items=flaky_items(30), commit=True
        )
    return Batch.objects.get(pk=batch.pk)
