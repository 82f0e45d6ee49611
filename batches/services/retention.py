"""Delete batches: on request, or when they have been kept as long as their retention says."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from batches import files, tallies
from batches.engine import nudges
from batches.models import Batch, BatchError, Item
from batches.services.common import batch_lock

logger = logging.getLogger(__name__)


@transaction.atomic
def batch_delete(*, batch: Batch, actor: str) -> None:
    """Remove the batch with its items, errors, events and files; later reads are 404."""
    batch = batch_lock(batch)
    batch_id = batch.pk
    # The items' outcomes stay counted in the metrics (batchsite.observability).
    tallies.tally_batch_retire(batch_id=batch_id, ended=batch.is_terminal)
    # Errors, then items, each in one statement, so Django never collects item rows.
    BatchError.objects.filter(batch_id=batch_id).delete()
    Item.objects.filter(batch_id=batch_id).delete()
    batch.delete()
    nudges.batch_nudge(batch_id)
    logger.info("batch %s deleted by %s", batch_id, actor)
    transaction.on_commit(lambda: nudges.nudges_clear(batch_id))
    transaction.on_commit(lambda: files.prefix_delete(files.batch_prefix(batch_id)))


def _retention_over(batch: Batch, now: datetime) -> bool:
    """Return True when an ended batch has been kept as long as its retention says.

    Its own `retention_days`, else BATCHSITE_RETENTION_DAYS; a retention longer than the
    API takes (set in the admin) keeps it for good.
    """
    if not batch.is_terminal or batch.finished_at is None:
        return False
    days = batch.retention_days
    if days is None:
        days = settings.BATCHSITE_RETENTION_DAYS
    if days > Batch.MAX_RETENTION_DAYS:
        return False
    return batch.finished_at < now - timedelta(days=days)


@transaction.atomic
def batch_purge(
    *,
    batch: Batch,
    actor: str,
    finished_before: datetime | None = None,
    retention_at: datetime | None = None,
) -> bool:
    """Delete an ended batch that is still due; return whether it was deleted.

    Due means ended, and also finished before `finished_before` and past its retention at
    `retention_at` when they are given. Whoever listed the batch did so without a lock, so
    it is checked again under its row lock: a batch rerun, given a longer retention or
    deleted since is kept.
    """
    locked = Batch.objects.for_update().filter(pk=batch.pk).first()
    if locked is None or not locked.is_terminal:
        return False
    if finished_before is not None and not (
        locked.finished_at and locked.finished_at < finished_before
    ):
        return False
    if retention_at is not None and not _retention_over(locked, retention_at):
        return False
    batch_delete(batch=locked, actor=actor)
    return True


def batches_purge_older(*, older_than: timedelta, dry_run: bool, actor: str) -> list[Batch]:
    """Delete ended batches that finished more than `older_than` ago; return them.

    A dry run only returns what would be deleted.
    """
    cutoff = timezone.now() - older_than
    due = list(
        Batch.objects.filter(status__in=Batch.TERMINAL, finished_at__lt=cutoff)
        .select_related("account")
        .order_by("finished_at", "number")
    )
    if dry_run:
        return due
    return [batch for batch in due if batch_purge(batch=batch, actor=actor, finished_before=cutoff)]
