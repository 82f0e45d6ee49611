"""The periodic sweep: recover lost chunks, start waiting batches, enforce time limits.

It also hands out the webhook deliveries whose next try is due.

It runs from a django-q2 schedule that every cluster fires, but lock rows make it run once
per interval and one run at a time; each step is idempotent and costs a few indexed
queries when there is nothing to do.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from batches import services, webhooks
from batches.engine import claim, finalize, planning
from batches.engine.locks import lock_acquire, lock_held, lock_release
from batches.models import Batch, Chunk

logger = logging.getLogger(__name__)

SWEEP_LOCK = "sweep"
# Held, never given back, by the run that had this interval's turn.
INTERVAL_LOCK = "sweep-interval"
ACTOR = "sweep"
# Purging deletes rows and files; a few batches per run keeps each run short.
PURGE_PER_RUN = 20


def sweep_scheduled() -> dict[str, int]:
    """Run the sweep for the schedule: once per interval, however many clusters fire it.

    Every cluster's scheduler may turn the schedule into a task; the first run in an
    interval takes a lock that simply expires shortly before the next interval, so the
    others skip.
    """
    seconds = max(settings.BATCHSITE_SWEEP_MINUTES * 60 - 5, 1)
    if not lock_acquire(name=INTERVAL_LOCK, owner=claim.worker_name(), seconds=seconds):
        return {"skipped": 1}
    return sweep_run()


def sweep_run() -> dict[str, int]:
    """Run every sweep step once; return how many things each step touched."""
    owner = claim.worker_name()
    if not lock_acquire(name=SWEEP_LOCK, owner=owner, seconds=300):
        return {"skipped": 1}
    try:
        now = timezone.now()
        report = {
            "abandoned": chunks_abandon_exhausted(now),
            "requeued": chunks_requeue(now),
            "ingests_requeued": ingests_requeue(now),
            "expired": batches_expire(now),
            "finalized": batches_finalize_stuck(),
            "purged": batches_purge(now),
            "webhooks": webhooks.deliveries_retry_due(now),
        }
    finally:
        lock_release(name=SWEEP_LOCK, owner=owner)
    if any(report.values()):
        logger.info("sweep: %s", report)
    return report


def _startable(now: datetime) -> Q:
    return Q(batch__status__in=Batch.ACTIVE) & (
        Q(batch__not_before__isnull=True) | Q(batch__not_before__lte=now)
    )


def chunks_requeue(now: datetime) -> int:
    """Queue chunks whose worker died (lease expired) or whose task never arrived.

    Held chunks are released within their batch's max_concurrency.

    A task can be lost (the Redis broker drops a task whose worker was killed) or still
    waiting; a second copy is harmless, as a chunk runs only under its lease.
    """
    stale = now - timedelta(seconds=settings.BATCHSITE_REQUEUE_AFTER)
    never_sent_or_stale = Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale)
    # A task sent long ago may be lost; one of a paused batch would only be held again.
    lost = Q(status=Chunk.Status.QUEUED, enqueued_at__lt=stale, batch__paused_at__isnull=True)
    orphaned = Q(status=Chunk.Status.RUNNING, lease_expires_at__lt=now) & (
        never_sent_or_stale | Q(enqueued_at__lt=F("lease_expires_at"))
    )
    startable = Chunk.objects.filter(_startable(now))
    chunk_ids = list(startable.filter(lost | orphaned).values_list("pk", flat=True)[:1000])
    if chunk_ids:
        planning.chunks_enqueue(chunk_ids)
    # Held chunks (no task out): waiting for not_before, a resume, or a free slot.
    held = startable.filter(status=Chunk.Status.QUEUED, enqueued_at__isnull=True)
    released = sum(
        claim.chunks_release(batch_id)
        for batch_id in held.filter(batch__paused_at__isnull=True)
        .values_list("batch_id", flat=True)
        .distinct()
        .order_by()[:100]
    )
    return len(chunk_ids) + released


def ingests_requeue(now: datetime) -> int:
    """Send again the source downloads of batches stuck `ingesting` with no worker on them."""
    stale = now - timedelta(seconds=settings.BATCHSITE_REQUEUE_AFTER)
    waiting = Batch.objects.filter(status=Batch.Status.INGESTING, created_at__lt=stale)
    count = 0
    for batch_id in waiting.values_list("pk", flat=True)[:100]:
        if not lock_held(f"ingest:{batch_id}"):
            planning.ingest_enqueue(batch_id)
            count += 1
    return count


def chunks_abandon_exhausted(now: datetime) -> int:
    """Give up on the items in flight in chunks whose workers died too many times."""
    limit = settings.BATCHSITE_CHUNK_MAX_ATTEMPTS
    chunks = Chunk.objects.filter(
        status=Chunk.Status.RUNNING, lease_expires_at__lt=now, attempts__gte=limit
    )
    count = 0
    for chunk in chunks[:100]:
        count += bool(
            claim.chunk_abandon(
                chunk_id=chunk.pk,
                reason=f"the worker running this item died {chunk.attempts} times",
            )
        )
    return count


def batches_expire(now: datetime) -> int:
    """Expire batches left open past the TTL, and batches whose deadline passed."""
    ttl = now - timedelta(seconds=settings.BATCHSITE_OPEN_BATCH_TTL)
    unopened = [Batch.Status.CREATED, Batch.Status.OPEN]
    stale_open = Batch.objects.filter(status__in=unopened, created_at__lt=ttl)
    past_deadline = Batch.objects.filter(deadline__lt=now).exclude(
        status__in=[*Batch.TERMINAL, Batch.Status.CANCELLING, Batch.Status.FINALIZING]
    )
    count = 0
    for batch in stale_open[:100]:
        services.batch_expire(batch=batch, actor=ACTOR, reason="left uncommitted past its TTL")
        count += 1
    for batch in past_deadline[:100]:
        services.batch_expire(batch=batch, actor=ACTOR, reason="its deadline passed")
        count += 1
    return count


def batches_finalize_stuck() -> int:
    """Finalize active batches none of whose chunks is left (a finalize that never ran)."""
    unfinished = [Chunk.Status.QUEUED, Chunk.Status.RUNNING]
    stuck = Batch.objects.filter(status__in=Batch.ACTIVE).exclude(chunks__status__in=unfinished)
    count = 0
    for batch_id in stuck.values_list("pk", flat=True)[:100]:
        batch = finalize.batch_finalize_if_done(batch_id)
        count += bool(batch and batch.is_terminal)
    return count


def batches_purge_due(now: datetime) -> list[Batch]:
    """List ended batches older than their retention (per batch, or the default), oldest first."""
    ended = Batch.objects.filter(status__in=Batch.TERMINAL)
    cutoffs = Q(
        retention_days__isnull=True,
        finished_at__lt=now - timedelta(days=settings.BATCHSITE_RETENTION_DAYS),
    )
    # One condition per retention in use: few distinct values, each an indexed range. A
    # longer retention than the API takes (set in the admin) keeps the batch for good,
    # rather than reaching back before year 1.
    for days in (
        ended.filter(retention_days__isnull=False, retention_days__lte=Batch.MAX_RETENTION_DAYS)
        .values_list("retention_days", flat=True)
        .distinct()
        .order_by()
    ):
        if days is None:  # excluded by the filter; this tells the type checker
            continue
        cutoffs |= Q(retention_days=days, finished_at__lt=now - timedelta(days=days))
    return list(ended.filter(cutoffs).order_by("finished_at")[:PURGE_PER_RUN])


def batches_purge(now: datetime, due: list[Batch] | None = None) -> int:
    """Delete the ended batches whose retention ran out; return how many were deleted.

    `due` is a listing made earlier (by default, one made now). It was made without locks,
    so services.batch_purge checks each batch again under its lock: one rerun since is kept.
    """
    if due is None:
        due = batches_purge_due(now)
    return sum(services.batch_purge(batch=batch, actor=ACTOR, retention_at=now) for batch in due)
