"""What the dashboard's reads share: liveness, stuck batches, rates and labels."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models.functions import Coalesce, Greatest

from batches.dashboard import charts
from batches.models import Batch

# Statuses in which a batch changes by itself (workers, ingest): worth polling for.
LIVE_STATUSES = frozenset({*Batch.ACTIVE, Batch.Status.INGESTING})


def stuck_minutes() -> int:
    """Return after how many minutes without progress an active batch counts as stuck."""
    return settings.BATCHSITE_STUCK_MINUTES


def _last_sign_of_life():
    """Return an expression: the latest of commit, start and last written outcome."""
    base = Coalesce("committed_at", "created_at")
    return Greatest(base, Coalesce("started_at", base), Coalesce("last_outcome_at", base))


def last_progress_at(batch: Batch) -> datetime:
    """Return when the batch last moved: committed, started or wrote an outcome."""
    moments = [batch.committed_at, batch.started_at, batch.last_outcome_at]
    return max((moment for moment in moments if moment), default=batch.created_at)


def is_stuck(batch: Batch, *, now: datetime, minutes: int) -> bool:
    """Return True for an active batch that has not moved for `minutes` (and may run now).

    A paused batch, or one waiting for its not_before, is still on purpose.
    """
    if batch.status not in Batch.ACTIVE or batch.paused_at is not None:
        return False
    if batch.not_before and batch.not_before > now:
        return False
    return now - last_progress_at(batch) > timedelta(minutes=minutes)


def batch_rate(batch: Batch) -> float | None:
    """Return items per second: the recent rate while live, the run's average once ended."""
    if batch.status in LIVE_STATUSES:
        return batch.throughput
    if not (batch.started_at and batch.last_outcome_at):
        return None
    seconds = (batch.last_outcome_at - batch.started_at).total_seconds()
    processed = batch.succeeded_items + batch.failed_items
    if seconds <= 0 or not processed:
        return None
    return round(processed / seconds, 2)


def percent_label(batch: Batch) -> str:
    """Return the progress as a percentage with one decimal, never rounded up to 100."""
    value = math.floor(batch.progress * 1000) / 10
    return f"{value:g}"


def rate_label(rate: float | None) -> str:
    """Format an items/s figure, or a dash without one."""
    return charts.number_label(rate) if rate is not None else "—"


def _duration_label(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
