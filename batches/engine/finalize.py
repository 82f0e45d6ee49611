"""Wind a batch down and finalize it once: failure policy, deferred sends, counter check."""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from batches import files, tallies, webhooks
from batches.engine import nudges, superseding
from batches.models import Batch, BatchError, Chunk, Item, counter_field
from batches.timeline import chunk_deltas_fold, event_record, items_move
from jobs import get_job_type
from jobs.base import JobError

logger = logging.getLogger(__name__)


def failure_policy_apply(*, batch_id: uuid.UUID, actor: str) -> None:
    """Stop the batch if its failures trip stop_on_error, max_failures or atomic.

    Call inside the transaction that recorded the failures.
    """
    batch = Batch.objects.for_update().get(pk=batch_id)
    if batch.status not in (Batch.Status.RUNNING, Batch.Status.COMMITTED):
        return
    if batch.atomic:
        ending, reason = Batch.Status.FAILED, "an item of an atomic batch failed"
    elif batch.stop_on_error:
        ending, reason = Batch.Status.STOPPED, "stop_on_error: an item failed"
    elif batch.max_failures is not None and batch.failed_items > batch.max_failures:
        ending, reason = Batch.Status.STOPPED, f"more than {batch.max_failures} items failed"
    else:
        return
    batch_wind_down(batch=batch, ending=ending, actor=actor, reason=reason)


def batch_wind_down(*, batch: Batch, ending: str, actor: str, reason: str = "") -> Batch:
    """Stop a committed or running batch: cancel what has not started, finalize if idle.

    `batch` must be locked by the caller. Chunks no worker holds are closed here; workers
    holding a chunk see `cancelling` between slices, cancel the rest of their range, and
    the last of them finalizes.
    """
    # Take the chunk rows before the items, in the order a slice does (it renews its
    # lease, then writes its items): a slice in flight commits first and the next one
    # waits for us. Taking items first could deadlock with a slice on PostgreSQL.
    running = chunks_lock(batch.pk)
    # A live worker's chunk's items are its to cancel: it may be running some of them
    # without having marked them `running` (a quick slice).
    outside_running = Q()
    for start, end in running:
        outside_running &= ~Q(index__gte=start, index__lt=end)
    items_move(
        batch_id=batch.pk,
        from_statuses=[Item.Status.PENDING, Item.Status.QUEUED],
        to_status=Item.Status.CANCELLED,
        where=outside_running,
        finished_at=timezone.now(),
    )
    Chunk.objects.filter(batch=batch, status=Chunk.Status.QUEUED).update(
        status=Chunk.Status.DONE, finished_at=timezone.now()
    )
    batch.status = Batch.Status.CANCELLING
    batch.ending = ending
    batch.save(update_fields=["status", "ending"])
    nudges.batch_nudge(batch.pk)
    event_record(
        batch=batch,
        kind="cancel_requested" if ending == Batch.Status.CANCELLED else "stop_requested",
        actor=actor,
        detail={"ending": ending, **({"reason": reason} if reason else {})},
    )
    if not Chunk.objects.filter(batch=batch, status=Chunk.Status.RUNNING).exists():
        batch_finalize(batch=batch)
    return batch


def chunks_lock(batch_id: uuid.UUID) -> list[tuple[int, int]]:
    """Lock the batch's unfinished chunks, in primary-key order; the batch is locked.

    Returns the index ranges, [start, end), of those a live worker holds: running under a
    lease that has not run out (one that has is lost; its worker writes nothing more).
    """
    chunks = (
        Chunk.objects.select_for_update()
        .filter(batch_id=batch_id, status__in=[Chunk.Status.QUEUED, Chunk.Status.RUNNING])
        .order_by("pk")
        .values_list("status", "lease_expires_at", "start_index", "end_index")
    )
    now = timezone.now()
    return [
        (start, end)
        for status, expires, start, end in chunks
        if status == Chunk.Status.RUNNING and expires is not None and expires >= now
    ]


def batch_finalize_if_done(batch_id: uuid.UUID) -> Batch | None:
    """Finalize the batch if no chunk of it is left; safe to call from any worker, any time."""
    with transaction.atomic():
        batch = Batch.objects.for_update().filter(pk=batch_id).first()
        if batch is None or batch.status not in Batch.ACTIVE:
            return batch
        if Chunk.objects.filter(
            batch=batch, status__in=[Chunk.Status.QUEUED, Chunk.Status.RUNNING]
        ).exists():
            return batch
        return batch_finalize(batch=batch)


def batch_finalize(*, batch: Batch) -> Batch:
    """Move a batch whose chunks are all done to its terminal state; the batch is locked.

    The caller's lock and the status check make this run once per batch run, whichever
    worker or request gets here first.
    """
    now = timezone.now()
    # Counter moves a dying worker wrote but could not fold in.
    chunk_deltas_fold(batch_id=batch.pk)
    # Nothing should be left unstarted once every chunk is done; if something is (a bug
    # or a lost chunk), say so rather than leave items hanging.
    leftover = items_move(
        batch_id=batch.pk,
        from_statuses=[Item.Status.PENDING, Item.Status.QUEUED, Item.Status.RUNNING],
        to_status=Item.Status.CANCELLED,
        finished_at=now,
    )
    if leftover:
        logger.warning(
            "batch %s finalized with %d unfinished items",
            batch.pk,
            leftover,
            extra={"batch": str(batch.pk)},
        )
    batch.refresh_from_db()
    ending = batch.ending or (
        Batch.Status.FAILED if batch.atomic and batch.failed_items else Batch.Status.FINISHED
    )
    if ending == Batch.Status.FINISHED and batch.atomic and not deferred_send(batch):
        ending = Batch.Status.FAILED
    if batch.atomic and ending != Batch.Status.FINISHED:
        # All or none: results of an atomic batch that did not finish are never published.
        tallies.tally_results_discarded(batch_id=batch.pk)
        discarded = items_move(
            batch_id=batch.pk,
            from_statuses=[Item.Status.SUCCEEDED],
            to_status=Item.Status.CANCELLED,
            result=None,
            output_files=[],
        )
        if discarded:
            event_record(batch=batch, kind="results_discarded", detail={"items": discarded})
            outputs = files.outputs_prefix(batch.pk)
            transaction.on_commit(lambda: files.prefix_delete(outputs))
    counters_verify(batch=batch)
    batch.refresh_from_db()
    batch.status = ending
    batch.ending = ""
    batch.finished_at = now
    batch.paused_at = None
    batch.save(update_fields=["status", "ending", "finished_at", "paused_at"])
    tallies.tally_batch_end(batch_id=batch.pk)
    event_record(batch=batch, kind=ending, actor="engine", detail=batch.counts())
    nudges.nudges_clear(batch.pk)
    if ending == Batch.Status.FINISHED:
        superseding.supersede_after_finish(batch)
    webhooks.batch_ended(batch)
    return batch


DEFERRED_RESULT = {"deferred": True}


SENT_RESULT = {"sent": True}


def deferred_send(batch: Batch) -> bool:
    """Do the deferred part of an atomic batch's items, all at once; False if it failed.

    Runs while finalizing, under the batch lock, once every item has been prepared.
    """
    for type_name in (
        Item.objects.filter(batch=batch, status=Item.Status.SUCCEEDED)
        .values_list("type", flat=True)
        .order_by()
        .distinct()
    ):
        job_type = get_job_type(type_name)
        if job_type is None or not job_type.defer_in_atomic:
            continue
        items = Item.objects.filter(batch=batch, type=type_name, status=Item.Status.SUCCEEDED)
        payloads = list(items.order_by("index").values_list("payload", flat=True))
        try:
            sent = job_type.finalize_send(payloads)
        except JobError as exc:
            BatchError.objects.create(batch=batch, code=exc.code, message=exc.message)
            Batch.objects.filter(pk=batch.pk).update(error_count=F("error_count") + 1)
            event_record(batch=batch, kind="deferred_failed", detail={"type": type_name})
            return False
        items.update(result=SENT_RESULT)
        event_record(batch=batch, kind="deferred_sent", detail={"type": type_name, "sent": sent})
    return True


def counters_verify(*, batch: Batch) -> bool:
    """Compare the batch counters with a recount of its items; repair and log a mismatch."""
    recount = dict(
        Item.objects.filter(batch=batch)
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    expected = {counter_field(status): recount.get(status, 0) for status in Item.Status.values}
    expected["total_items"] = sum(recount.values())
    stored = Batch.objects.filter(pk=batch.pk).values(*expected).get()
    if stored == expected:
        return True
    logger.error(
        "batch %s counters %s disagree with recount %s",
        batch.pk,
        stored,
        expected,
        extra={"batch": str(batch.pk)},
    )
    Batch.objects.filter(pk=batch.pk).update(**expected)
    event_record(batch=batch, kind="counters_repaired", detail={"was": stored, "now": expected})
    return False
