"""Claim chunks under a lease, keep the lease alive, hold, release and hand chunks back.

Correctness lives in our tables, not in the broker. django-q2 may deliver a chunk task
twice or never; a second delivery finds the chunk leased or done and returns, and the
sweep re-queues chunks whose lease expired.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from batches import webhooks
from batches.engine import planning, shutdown
from batches.engine.finalize import failure_policy_apply
from batches.models import ITEM_FAILED, Batch, Chunk, Item
from batches.timeline import chunk_deltas_fold, items_move

logger = logging.getLogger(__name__)


def chunks_release(batch_id: uuid.UUID) -> int:
    """Hand held chunks of a startable, unpaused batch to the broker, up to its free slots.

    Held chunks are queued with no task out (enqueued_at is null). A batch without
    max_concurrency has them all released; one with it only as many as would bring its
    running and already-sent chunks up to the limit. Returns how many were released.
    """
    with transaction.atomic():
        batch = Batch.objects.for_update().filter(pk=batch_id).first()
        if (
            batch is None
            or batch.status not in (Batch.Status.COMMITTED, Batch.Status.RUNNING)
            or batch.paused_at
            or (batch.not_before and batch.not_before > timezone.now())
        ):
            return 0
        chunks = Chunk.objects.filter(batch_id=batch_id)
        held = chunks.filter(status=Chunk.Status.QUEUED, enqueued_at__isnull=True)
        if batch.max_concurrency:
            busy = chunks.filter(
                Q(status=Chunk.Status.RUNNING)
                | Q(status=Chunk.Status.QUEUED, enqueued_at__isnull=False)
            ).count()
            free = batch.max_concurrency - busy
            if free <= 0:
                return 0
            held = held.order_by("start_index")[:free]
        chunk_ids = list(held.values_list("pk", flat=True))
    # The held chunks were committed long ago, so their tasks may go out right away.
    if chunk_ids:
        planning.chunks_enqueue(chunk_ids)
    return len(chunk_ids)


def chunk_hold(chunk_id: int) -> None:
    """Take a queued chunk's task back: it waits, held, for a resume or a free slot."""
    Chunk.objects.filter(pk=chunk_id, status=Chunk.Status.QUEUED).update(enqueued_at=None)


def chunk_abandon(*, chunk_id: int, reason: str) -> int:
    """Fail the items a chunk's dying workers left running and queue the chunk's rest again.

    Called by the sweep when workers died on the chunk too often: the items that were in
    flight each time are the likely cause (a worker that takes a chunk over marks its
    first slice `running`, so they are). Does nothing if a live worker holds the chunk by
    now. Returns the number of items failed. A batch that asked for `item.failed` is sent
    them, from this transaction, as a slice's failures are.
    """
    batch_id = Chunk.objects.filter(pk=chunk_id).values_list("batch_id", flat=True).first()
    if batch_id is None:
        return 0
    with transaction.atomic():
        # The batch row before the chunk's, the order a cancel or a settle takes them in.
        batch = Batch.objects.for_update().filter(pk=batch_id).first()
        chunk = (
            Chunk.objects.select_for_update()
            .filter(pk=chunk_id, status=Chunk.Status.RUNNING, lease_expires_at__lt=timezone.now())
            .first()
        )
        if chunk is None:
            return 0
        chunk_deltas_fold(batch_id=chunk.batch_id, chunk_ids=[chunk.pk])
        in_range = Q(index__gte=chunk.start_index, index__lt=chunk.end_index)
        # Read before they move, for a batch that asked to hear of failed items.
        lost = []
        if batch is not None and batch.notifies(ITEM_FAILED):
            lost = list(
                Item.objects.filter(in_range, batch_id=batch_id, status=Item.Status.RUNNING)
                .order_by("index")
                .values("index", "external_id")
            )
        failed = items_move(
            batch_id=chunk.batch_id,
            from_statuses=[Item.Status.RUNNING],
            to_status=Item.Status.FAILED,
            where=in_range,
            error_code="worker_lost",
            error_message=reason,
            finished_at=timezone.now(),
        )
        if lost:
            error = {"error_code": "worker_lost", "error_message": reason}
            webhooks.items_failed(batch_id=batch_id, failures=[{**row, **error} for row in lost])
        Chunk.objects.filter(pk=chunk.pk).update(
            status=Chunk.Status.QUEUED,
            lease_owner="",
            lease_expires_at=None,
            attempts=0,
            pending_seq=None,
        )
        if failed:
            failure_policy_apply(batch_id=chunk.batch_id, actor="sweep")
        transaction.on_commit(lambda: planning.chunks_enqueue([chunk.pk]))
    return failed


def chunk_hand_back(*, chunk: Chunk, owner: str, cursor: int, send: bool) -> bool:
    """Give our chunk back: queued, lease cleared, its unstarted items from `cursor` queued.

    For a paused batch (`send` False: the chunk waits, held, for the resume's release) and
    for a worker that stops (`send`: the batch's release sends it again once this commits,
    so a live cluster takes the rest at once). Call it in a transaction that holds the
    batch's row lock, with the chunk's counter moves folded. A clean hand-back is no worker
    death: the attempt our claim counted is taken back. Returns False if the lease is not
    ours (then nothing changes).
    """
    # The chunk row before the items, the order a slice and a cancel take them in.
    handed = Chunk.objects.filter(
        pk=chunk.pk, lease_owner=owner, status=Chunk.Status.RUNNING
    ).update(
        status=Chunk.Status.QUEUED,
        lease_owner="",
        lease_expires_at=None,
        pending_seq=None,
        enqueued_at=None,
        attempts=F("attempts") - 1,
    )
    if not handed:
        return False
    items_move(
        batch_id=chunk.batch_id,
        from_statuses=[Item.Status.RUNNING],
        to_status=Item.Status.QUEUED,
        where=Q(index__gte=cursor, index__lt=chunk.end_index),
        started_at=None,
    )
    if send:
        batch_id = chunk.batch_id
        transaction.on_commit(lambda: chunks_release(batch_id))
    return True


def chunk_give_back(*, chunk: Chunk, owner: str, cursor: int) -> str:
    """Give our chunk back if its batch paused or this worker stops; say which, or "".

    Takes the batch's row lock, so a resume either comes before (and we go on) or after
    (and its release sends this chunk again). A stopping worker's chunk is sent again at
    once, unless the batch is paused; one of a cancelling batch is not given back: the
    worker's next slice write cancels the rest of its range. "lease lost" if not ours.
    """
    batch = Batch.objects.for_update().filter(pk=chunk.batch_id).first()
    if batch is None:
        return ""
    if batch.paused_at:
        why = "paused"
    elif shutdown.requested() and batch.status != Batch.Status.CANCELLING:
        why = "stopping"
    else:
        return ""
    if not chunk_hand_back(chunk=chunk, owner=owner, cursor=cursor, send=why == "stopping"):
        return "lease lost"
    return why


def chunk_pass_on(chunk_id: int) -> bool:
    """Send a chunk's task again if the chunk still waits for a worker; for one that stops.

    A chunk waits if it is queued with its task out, or its lease ran out. A held chunk (no
    task out) stays held; one that is done or leased needs no task. Returns True if sent.
    """
    waiting = Chunk.objects.filter(_waiting(timezone.now()), pk=chunk_id).exists()
    if waiting:
        planning.chunks_enqueue([chunk_id])
    return waiting


def _waiting(now: datetime) -> Q:
    """Match chunks waiting for a worker: queued with their task out, or whose lease ran
    out (their worker died or was cut off)."""
    return Q(status=Chunk.Status.QUEUED, enqueued_at__isnull=False) | Q(
        status=Chunk.Status.RUNNING, lease_expires_at__lt=now
    )


def worker_name() -> str:
    """Name this worker process uniquely, for leases."""
    # Host names may be long; lease_owner and Lock.owner hold 100 characters.
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_seconds() -> int:
    """Return how long a chunk lease lasts."""
    return settings.BATCHSITE_LEASE_SECONDS


def chunk_claim(*, chunk_id: int, owner: str) -> Chunk | None:
    """Take the chunk (or a better one) if the batch's pause and limits allow; else None.

    A queued chunk of a paused batch, or of one at its max_concurrency, is held instead;
    if a batch of higher priority has a chunk waiting, the worker takes that one and
    sends this chunk's task again. A chunk whose worker died (expired lease) is taken over
    whatever the batch's state: it is work in flight, not new work.
    """
    gate = (
        Chunk.objects.filter(pk=chunk_id)
        .values(
            "status", "batch_id", "batch__priority", "batch__paused_at", "batch__max_concurrency"
        )
        .first()
    )
    if gate is None:
        return None
    if gate["status"] == Chunk.Status.QUEUED:
        if gate["batch__paused_at"] or gate["batch__max_concurrency"]:
            return _chunk_claim_limited(chunk_id=chunk_id, batch_id=gate["batch_id"], owner=owner)
        better = _chunk_claim_better(priority=gate["batch__priority"], owner=owner)
        if better is not None:
            planning.chunks_enqueue([chunk_id])
            return better
    return _chunk_claim(chunk_id=chunk_id, owner=owner)


def _chunk_claim_limited(*, chunk_id: int, batch_id: uuid.UUID, owner: str) -> Chunk | None:
    """Claim a queued chunk of a paused or limited batch under the batch's row lock.

    The lock orders this against pause, resume and other claims, so the count of running
    chunks is exact and a chunk held here is seen by the release that follows a resume.
    """
    with transaction.atomic():
        batch = Batch.objects.for_update().filter(pk=batch_id).first()
        if batch is None:
            return None
        if batch.status in (Batch.Status.COMMITTED, Batch.Status.RUNNING):
            if batch.paused_at:
                chunk_hold(chunk_id)
                return None
            if batch.max_concurrency:
                running = Chunk.objects.filter(
                    batch_id=batch_id, status=Chunk.Status.RUNNING
                ).count()
                if running >= batch.max_concurrency:
                    chunk_hold(chunk_id)
                    return None
        return _chunk_claim(chunk_id=chunk_id, owner=owner)


def chunk_claim_waiting(*, owner: str) -> Chunk | None:
    """Claim a chunk whose task is out but not running yet, the most urgent first; or None.

    Held chunks (no task out) are left alone: they wait for a resume or a free slot.
    """
    return _chunk_claim_better(priority=None, owner=owner)


def _chunk_claim_better(*, priority: int | None, owner: str) -> Chunk | None:
    """Claim a waiting chunk of a batch of higher priority (any, if None) a worker may take.

    Waiting: its task is out but not running yet, or its worker's lease ran out (a worker
    that died or was cut off). Taking the latter at once spares its items the wait for
    the sweep; one whose workers died too often is left to the sweep, which fails the
    items they had in flight.
    """
    now = timezone.now()
    startable: dict[str, Any] = {
        "status__in": (Batch.Status.COMMITTED, Batch.Status.RUNNING),
        "paused_at__isnull": True,
    }
    if priority is not None:
        if not Batch.objects.filter(**startable, priority__gt=priority).exists():
            return None
        startable["priority__gt"] = priority
    candidates = (
        Chunk.objects.filter(**{f"batch__{lookup}": value for lookup, value in startable.items()})
        .filter(_waiting(now))
        # Not one whose workers died too often: the sweep fails what they had in flight.
        .exclude(status=Chunk.Status.RUNNING, attempts__gte=settings.BATCHSITE_CHUNK_MAX_ATTEMPTS)
        .filter(Q(batch__not_before__isnull=True) | Q(batch__not_before__lte=now))
        .order_by("-batch__priority", "batch__committed_at", "start_index")
        .values_list("pk", "status", "batch__max_concurrency", "batch_id")[:5]
    )
    for candidate_id, status, limit, batch_id in candidates:
        # A chunk taken over keeps the slot its dead worker held in a limited batch.
        if limit and status == Chunk.Status.QUEUED:
            chunk = _chunk_claim_limited(chunk_id=candidate_id, batch_id=batch_id, owner=owner)
        else:
            chunk = _chunk_claim(chunk_id=candidate_id, owner=owner)
        if chunk is not None:
            return chunk
    return None


def _chunk_claim(*, chunk_id: int, owner: str) -> Chunk | None:
    """Take the chunk if it is queued or its lease expired; None if someone else has it."""
    now = timezone.now()
    claimed = (
        Chunk.objects.filter(pk=chunk_id)
        .filter(
            Q(status=Chunk.Status.QUEUED) | Q(status=Chunk.Status.RUNNING, lease_expires_at__lt=now)
        )
        .update(
            status=Chunk.Status.RUNNING,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds()),
            attempts=F("attempts") + 1,
            # A dead owner's reservation is void: it wrote nothing under those numbers.
            pending_seq=None,
        )
    )
    if not claimed:
        return None
    return Chunk.objects.select_related("batch").get(pk=chunk_id)


def lease_renew(*, chunk: Chunk, owner: str) -> bool:
    """Extend our lease on the chunk; False if it is no longer ours.

    A lease that ran out is lost even if no one took the chunk yet: a cancel may already
    have treated the chunk as ownerless and cancelled items this worker still had.
    """
    return _lease_extend(chunk_id=chunk.pk, owner=owner)


def _lease_extend(*, chunk_id: int, owner: str) -> bool:
    now = timezone.now()
    return bool(
        Chunk.objects.filter(
            pk=chunk_id,
            lease_owner=owner,
            status=Chunk.Status.RUNNING,
            lease_expires_at__gte=now,
        ).update(lease_expires_at=now + timedelta(seconds=lease_seconds()))
    )


class LeaseKeeper(threading.Thread):
    """Renew a chunk's lease every third of its length while the worker is busy.

    One item may run longer than a lease (a slow HTTP call, a large image); without this
    another worker would take the chunk over and run the same item at the same time. The
    keeper only extends: whether the lease is still ours is decided by the worker's own
    transactions, which renew it too.
    """

    def __init__(self, *, chunk_id: int, owner: str):
        super().__init__(name=f"lease-{chunk_id}", daemon=True)
        self.chunk_id = chunk_id
        self.owner = owner
        self.stopping = threading.Event()

    def run(self) -> None:
        """Extend the lease until stopped; never raise."""
        try:
            while not self.stopping.wait(lease_seconds() / 3):
                _lease_extend(chunk_id=self.chunk_id, owner=self.owner)
        except Exception:
            logger.warning(
                "lease keeper of chunk %s stopped",
                self.chunk_id,
                exc_info=True,
                extra={"chunk": self.chunk_id},
            )
        finally:
            connections.close_all()

    def stop(self) -> None:
        """Stop renewing and wait for the thread to end."""
        self.stopping.set()
        self.join()
