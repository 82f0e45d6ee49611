"""Writers take rows in one order (batch, then chunks, then items), so none deadlocks.

On PostgreSQL a slice writes its items holding only its chunk row, while a cancel or the
sweep holds the batch row. These tests hold one side's locks open in a thread and make
the other side run into them; on SQLite writers are serialized, so there is nothing to see.
"""

import threading
from collections import Counter
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from batches import engine, services
from batches.engine import planning
from batches.engine.claim import chunk_abandon, lease_renew
from batches.models import Batch, Chunk, Item
from batches.timeline import chunk_deltas_add, items_move
from tests.conftest import wait_for
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: no two transactions interleave")


@pytest.fixture
def running_chunk() -> Chunk:
    batch, _ = services.batch_create(
        account=AccountFactory(),
        actor="test",
        type="echo",
        items=[{"payload": {"n": n}} for n in range(10)],
    )
    with mock.patch.object(planning, "chunks_enqueue"):
        services.batch_commit(batch=batch, actor="test")
    chunk = Chunk.objects.get(batch=batch)
    assert engine.chunk_claim(chunk_id=chunk.pk, owner="worker") is not None
    return Chunk.objects.get(pk=chunk.pk)


def lock_waiters() -> int:
    """How many other sessions on this database wait for a row lock right now."""
    with connection.cursor() as cursor:
        # Inside a transaction the statistics views are a snapshot unless cleared.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def in_thread(target, errors: list) -> threading.Thread:
    def run():
        try:
            target()
        except Exception as error:  # the deadlock PostgreSQL breaks lands here
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_lock_order__a_cancel_waits_for_a_slice_in_flight_instead_of_deadlocking(running_chunk):
    chunk = running_chunk
    holding, go = threading.Event(), threading.Event()
    errors: list[Exception] = []

    def slice_write():
        # What a slice does: renew its lease, then move its items, here in two steps
        # with the cancel arriving in between. Its counter moves go to the chunk, not
        # the batch row: a slice does not lock the batch.
        deltas: Counter[str] = Counter()
        with transaction.atomic():
            assert lease_renew(chunk=chunk, owner="worker")
            items_move(
                batch_id=chunk.batch_id,
                from_statuses=[Item.Status.QUEUED],
                to_status=Item.Status.RUNNING,
                where=Q(index__gte=5),
                deltas=deltas,
            )
            holding.set()
            assert go.wait(30)
            items_move(
                batch_id=chunk.batch_id,
                from_statuses=[Item.Status.QUEUED],
                to_status=Item.Status.RUNNING,
                where=Q(index__lt=5),
                deltas=deltas,
            )
            chunk_deltas_add(chunk.pk, deltas)

    def cancel():
        services.batch_cancel(batch=Batch.objects.get(pk=chunk.batch_id), actor="test")

    slicer = in_thread(slice_write, errors)
    assert holding.wait(30)
    canceller = in_thread(cancel, errors)
    try:
        wait_for(lambda: lock_waiters() >= 1, timeout=30, interval=0.02)
    finally:
        go.set()
        slicer.join(30)
        canceller.join(30)

    assert not slicer.is_alive()
    assert not canceller.is_alive()
    assert errors == []
    # The slice committed first: its items run, and the cancel found none queued.
    statuses = set(Item.objects.filter(batch_id=chunk.batch_id).values_list("status", flat=True))
    assert statuses == {Item.Status.RUNNING}
    assert Batch.objects.get(pk=chunk.batch_id).status == Batch.Status.CANCELLING


def test_lock_order__abandoning_a_dead_chunk_and_a_cancel_never_deadlock(running_chunk):
    chunk = running_chunk
    Chunk.objects.filter(pk=chunk.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))
    Item.objects.filter(batch_id=chunk.batch_id, index=0).update(status=Item.Status.RUNNING)
    errors: list[Exception] = []

    with mock.patch.object(planning, "chunks_enqueue"), transaction.atomic():
        # The cancel's first step, the batch row; the sweep abandons the chunk meanwhile.
        batch = Batch.objects.select_for_update().get(pk=chunk.batch_id)
        abandoner = in_thread(
            lambda: chunk_abandon(chunk_id=chunk.pk, reason="died too often"), errors
        )
        try:
            wait_for(lambda: lock_waiters() >= 1, timeout=30, interval=0.02)
            services.batch_cancel(batch=batch, actor="test")
        except BaseException:
            abandoner.join(30)
            raise
    abandoner.join(30)

    assert not abandoner.is_alive()
    assert errors == []
    # The cancel came first and took the queued items; the abandon then failed the item
    # the dead worker left running.
    statuses = dict(Item.objects.filter(batch_id=chunk.batch_id).values_list("index", "status"))
    assert statuses == {0: Item.Status.FAILED, **dict.fromkeys(range(1, 10), "cancelled")}
    assert Item.objects.get(batch_id=chunk.batch_id, index=0).error_code == "worker_lost"
