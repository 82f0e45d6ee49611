"""The worker side: plan chunks, claim them under a lease, run items, finalize batches once.

Correctness lives in our tables, not in the broker. django-q2 may deliver a chunk task
twice or never; a second delivery finds the chunk leased or done and returns, and the
sweep re-queues chunks whose lease expired. Every write a worker makes happens in a
transaction that first renews its lease, so a worker whose chunk was taken over writes
nothing.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from batches import bulk, nudges, superseding, webhooks
from batches.models import Batch, BatchError, Chunk, Item, counter_field
from batches.timeline import event_record, items_move
from jobs import JobContext, PermanentError, TransientError, get_job_type
from jobs.base import JobError
from jobs.timelimit import ItemTimeout, time_limit

logger = logging.getLogger(__name__)

CHUNK_TASK = "batches.tasks.chunk_run"
INGEST_TASK = "batches.tasks.source_ingest"


# --- planning and queueing ---------------------------------------------------------------------


def type_sizes(type_name: str) -> tuple[int, int]:
    """Return (chunk_size, slice_size) for items of a job type."""
    job_type = get_job_type(type_name)
    if job_type is None:
        return 1000, 100
    return job_type.chunk_size, job_type.slice_size


def chunks_plan(batch: Batch) -> list[int]:
    """Create chunks covering the batch's queued items; return their ids.

    Chunks follow the items' own types, not the batch's: a batch of one type gets chunks
    of that type's size; in a mixed batch each item counts as 1/chunk_size of a chunk,
    so a run of slow http.request items is cut into small chunks that spread over the
    workers while a run of echo items stays in big ones. A chunk's slice size is the
    smallest among its items' types. Ranges with no queued item get no chunk, so a rerun
    of a few failed items in a large batch plans only the chunks it needs.
    """
    queued = Item.objects.filter(batch=batch, status=Item.Status.QUEUED)
    if batch.item_types_mixed:
        chunks = _chunks_mixed(batch, queued)
    else:
        size, slice_size = type_sizes(batch.type)
        buckets = (
            queued.annotate(bucket=F("index") / size)
            .values_list("bucket", flat=True)
            .distinct()
            .order_by("bucket")
        )
        chunks = [
            Chunk(
                batch=batch,
                start_index=bucket * size,
                end_index=(bucket + 1) * size,
                slice_size=slice_size,
            )
            for bucket in buckets
        ]
    return [chunk.pk for chunk in Chunk.objects.bulk_create(chunks)]


def _chunks_mixed(batch: Batch, queued) -> list[Chunk]:
    """Cut a mixed batch's queued items into chunks weighed by each item's type."""
    sizes: dict[str, tuple[int, int]] = {}
    chunks: list[Chunk] = []
    start = last = None
    load = 0.0
    slice_size = 0
    for index, type_name in (
        queued.order_by("index").values_list("index", "type").iterator(chunk_size=10_000)
    ):
        if type_name not in sizes:
            sizes[type_name] = type_sizes(type_name)
        chunk_size, type_slice = sizes[type_name]
        if start is not None and load + 1 / chunk_size > 1 + 1e-9:
            chunks.append(
                Chunk(batch=batch, start_index=start, end_index=last + 1, slice_size=slice_size)
            )
            start = None
        if start is None:
            start, load, slice_size = index, 0.0, type_slice
        load += 1 / chunk_size
        slice_size = min(slice_size, type_slice)
        last = index
    if start is not None:
        chunks.append(
            Chunk(batch=batch, start_index=start, end_index=last + 1, slice_size=slice_size)
        )
    return chunks


def chunks_enqueue(chunk_ids: list[int]) -> None:
    """Hand chunks to django-q2; call outside any transaction that created them."""
    from django_q.tasks import async_task

    Chunk.objects.filter(pk__in=chunk_ids).update(enqueued_at=timezone.now())
    for chunk_id in chunk_ids:
        async_task(CHUNK_TASK, chunk_id, task_name=f"chunk-{chunk_id}")


def ingest_enqueue(batch_id) -> None:
    """Hand a batch's source download to django-q2; call outside the creating transaction."""
    from django_q.tasks import async_task

    async_task(INGEST_TASK, str(batch_id), task_name=f"ingest-{batch_id}")


def chunks_enqueue_on_commit(batch: Batch, chunk_ids: list[int]) -> None:
    """Queue the batch's chunks once the transaction commits, unless they must wait.

    A batch whose not_before lies ahead, or that is paused, keeps its chunks held (queued,
    with no task out); the sweep or a resume releases them. A batch with max_concurrency
    gets that many tasks; each chunk that ends releases the next.
    """
    if not chunk_ids or batch.paused_at or (batch.not_before and batch.not_before > timezone.now()):
        return
    if batch.max_concurrency:
        chunk_ids = chunk_ids[: batch.max_concurrency]
    transaction.on_commit(lambda: chunks_enqueue(chunk_ids))


def chunks_release(batch_id) -> int:
    """Hand held chunks of a startable, unpaused batch to the broker, up to its free slots.

    Held chunks are queued with no task out (enqueued_at is null). A batch without
    max_concurrency has them all released; one with it only as many as would bring its
    running and already-sent chunks up to the limit. Returns how many were released.
    """
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(pk=batch_id).first()
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
        chunks_enqueue(chunk_ids)
    return len(chunk_ids)


def chunk_hold(chunk_id: int) -> None:
    """Take a queued chunk's task back: it waits, held, for a resume or a free slot."""
    Chunk.objects.filter(pk=chunk_id, status=Chunk.Status.QUEUED).update(enqueued_at=None)


def chunk_abandon(*, chunk_id: int, reason: str) -> int:
    """Fail the items a chunk's dying workers left running and queue the chunk's rest again.

    Called by the sweep when workers died on the chunk too often: the items that were in
    flight each time are the likely cause. Does nothing if a live worker holds the chunk
    by now. Returns the number of items failed.
    """
    with transaction.atomic():
        chunk = (
            Chunk.objects.select_for_update()
            .filter(pk=chunk_id, status=Chunk.Status.RUNNING, lease_expires_at__lt=timezone.now())
            .first()
        )
        if chunk is None:
            return 0
        Batch.objects.select_for_update().filter(pk=chunk.batch_id).first()
        failed = items_move(
            batch_id=chunk.batch_id,
            from_statuses=[Item.Status.RUNNING],
            to_status=Item.Status.FAILED,
            where=Q(index__gte=chunk.start_index, index__lt=chunk.end_index),
            error_code="worker_lost",
            error_message=reason,
            finished_at=timezone.now(),
        )
        Chunk.objects.filter(pk=chunk.pk).update(
            status=Chunk.Status.QUEUED, lease_owner="", lease_expires_at=None, attempts=0
        )
        if failed:
            failure_policy_apply(batch_id=chunk.batch_id, actor="sweep")
        transaction.on_commit(lambda: chunks_enqueue([chunk.pk]))
    return failed


def failure_policy_apply(*, batch_id, actor: str) -> None:
    """Stop the batch if its failures trip stop_on_error, max_failures or atomic.

    Call inside the transaction that recorded the failures.
    """
    batch = Batch.objects.select_for_update().get(pk=batch_id)
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


# --- winding down and finalizing ---------------------------------------------------------------


def batch_wind_down(*, batch: Batch, ending: str, actor: str, reason: str = "") -> Batch:
    """Stop a committed or running batch: cancel what has not started, finalize if idle.

    `batch` must be locked by the caller. Chunks no worker holds are closed here; workers
    holding a chunk see `cancelling` between slices, cancel the rest of their range, and
    the last of them finalizes.
    """
    items_move(
        batch_id=batch.pk,
        from_statuses=[Item.Status.PENDING, Item.Status.QUEUED],
        to_status=Item.Status.CANCELLED,
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
        kind={Batch.Status.CANCELLED: "cancel_requested"}.get(ending, "stop_requested"),
        actor=actor,
        detail={"ending": ending, **({"reason": reason} if reason else {})},
    )
    if not Chunk.objects.filter(batch=batch, status=Chunk.Status.RUNNING).exists():
        batch_finalize(batch=batch)
    return batch


def batch_finalize_if_done(batch_id) -> Batch | None:
    """Finalize the batch if no chunk of it is left; safe to call from any worker, any time."""
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(pk=batch_id).first()
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
        discarded = items_move(
            batch_id=batch.pk,
            from_statuses=[Item.Status.SUCCEEDED],
            to_status=Item.Status.CANCELLED,
            result=None,
            output_files=[],
        )
        if discarded:
            event_record(batch=batch, kind="results_discarded", detail={"items": discarded})
            outputs = batch_outputs_dir(batch.pk)
            transaction.on_commit(lambda: shutil.rmtree(outputs, ignore_errors=True))
    counters_verify(batch=batch)
    batch.refresh_from_db()
    batch.status = ending
    batch.ending = ""
    batch.finished_at = now
    batch.paused_at = None
    batch.save(update_fields=["status", "ending", "finished_at", "paused_at"])
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


# --- the worker path ---------------------------------------------------------------------------


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
            chunks_enqueue([chunk_id])
            return better
    return _chunk_claim(chunk_id=chunk_id, owner=owner)


def _chunk_claim_limited(*, chunk_id: int, batch_id, owner: str) -> Chunk | None:
    """Claim a queued chunk of a paused or limited batch under the batch's row lock.

    The lock orders this against pause, resume and other claims, so the count of running
    chunks is exact and a chunk held here is seen by the release that follows a resume.
    """
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(pk=batch_id).first()
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


def _chunk_claim_better(*, priority: int, owner: str) -> Chunk | None:
    """Claim a waiting chunk of a higher-priority batch, if there is one a worker may take."""
    now = timezone.now()
    if not Batch.objects.filter(
        status__in=(Batch.Status.COMMITTED, Batch.Status.RUNNING),
        priority__gt=priority,
        paused_at__isnull=True,
    ).exists():
        return None
    candidates = (
        Chunk.objects.filter(
            status=Chunk.Status.QUEUED,
            enqueued_at__isnull=False,
            batch__status__in=(Batch.Status.COMMITTED, Batch.Status.RUNNING),
            batch__priority__gt=priority,
            batch__paused_at__isnull=True,
        )
        .filter(Q(batch__not_before__isnull=True) | Q(batch__not_before__lte=now))
        .order_by("-batch__priority", "batch__committed_at", "start_index")
        .values_list("pk", "batch__max_concurrency", "batch_id")[:5]
    )
    for candidate_id, limit, batch_id in candidates:
        if limit:
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
        )
    )
    if not claimed:
        return None
    return Chunk.objects.select_related("batch").get(pk=chunk_id)


def lease_renew(*, chunk: Chunk, owner: str) -> bool:
    """Extend our lease on the chunk; False if it is no longer ours."""
    return bool(
        Chunk.objects.filter(pk=chunk.pk, lease_owner=owner, status=Chunk.Status.RUNNING).update(
            lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds())
        )
    )


@dataclass(slots=True)
class Outcome:
    """What running one item produced."""

    item_id: int
    index: int
    status: str
    attempts: int
    result_json: str | None = None
    error_code: str = ""
    error_message: str = ""
    output_files_json: str = bulk.EMPTY_LIST_JSON
    finished_at: Any = None


def outputs_json(outputs: list[tuple[str, Path]]) -> str:
    """Serialize a job's output files as [{"name", "path"}], paths relative to MEDIA_ROOT."""
    if not outputs:
        return bulk.EMPTY_LIST_JSON
    root = Path(settings.MEDIA_ROOT)
    return bulk.json_text(
        [{"name": name, "path": str(path.relative_to(root))} for name, path in outputs]
    )


def outputs_discard(outputs: list[tuple[str, Path]]) -> None:
    """Delete the files an attempt wrote before it failed."""
    for _, path in outputs:
        path.unlink(missing_ok=True)


def batch_outputs_dir(batch_id) -> Path:
    """Return the folder where job types write a batch's output files."""
    return Path(settings.MEDIA_ROOT) / "batches" / str(batch_id) / "out"


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
                Chunk.objects.filter(
                    pk=self.chunk_id, lease_owner=self.owner, status=Chunk.Status.RUNNING
                ).update(lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds()))
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


class ChunkRunner:
    """Run one claimed chunk slice by slice, one transaction per slice."""

    def __init__(self, *, chunk: Chunk, owner: str):
        self.chunk = chunk
        self.owner = owner
        self.batch_id = chunk.batch_id
        batch = chunk.batch
        self.slice_size = chunk.slice_size
        self.output_dir = batch_outputs_dir(self.batch_id)
        self.atomic = batch.atomic
        # With a failure policy, a failed item is written at once so that the policy can
        # stop the batch before this worker starts another item.
        self.stops_on_failure = (
            batch.atomic or batch.stop_on_error or batch.max_failures is not None
        )
        # A batch with max_concurrency sends its next held chunk when one of ours ends.
        self.limited = bool(batch.max_concurrency)
        # Created before the first look at the batch, so no nudge after it is missed.
        self.watch = nudges.BatchWatch(self.batch_id)

    def run(self) -> str:
        """Process the chunk until its range is done, the batch stops, or the lease is lost."""
        keeper = LeaseKeeper(chunk_id=self.chunk.pk, owner=self.owner)
        keeper.start()
        try:
            return self._run()
        finally:
            keeper.stop()
            self.watch.close()

    def _run(self) -> str:
        cursor = self.chunk.start_index
        outcomes: list[Outcome] = []
        while True:
            with transaction.atomic():
                if not self._renew():
                    return "lease lost"
                if outcomes:
                    self._write(outcomes)
                    outcomes = []
                state = (
                    Batch.objects.filter(pk=self.batch_id)
                    .values_list("status", "paused_at")
                    .first()
                )
                if state is None:
                    return "batch deleted"
                status, paused_at = state
                if status == Batch.Status.CANCELLING:
                    self._cancel_rest(cursor)
                    self._close()
                    break
                if paused_at and self._hand_back(cursor):
                    return "paused"
                if status == Batch.Status.COMMITTED:
                    self._start_batch()
                rows = self._next_slice(cursor)
                if not rows:
                    self._close()
                    break
            outcomes = self._run_slice(rows)
            if outcomes:
                cursor = outcomes[-1].index + 1
        if self.limited:
            chunks_release(self.batch_id)
        batch_finalize_if_done(self.batch_id)
        return "done"

    def _run_slice(self, rows: list[dict]) -> list[Outcome]:
        """Run the slice's items until it is done, must stop, or has taken its time.

        Before each item the worker asks whether its batch was stopped, cancelled or
        paused (an fstat of the nudge file; a read of the batch every 100 ms); after a
        failure that may trip the batch's failure policy it stops to write it at once.
        A slice also ends early once it has taken BATCHSITE_SLICE_SECONDS, which keeps
        progress live for slow items. Items not reached stay `running` in our range and
        come first in the next slice, or go back to `queued` if the batch paused.
        """
        deadline = time.monotonic() + settings.BATCHSITE_SLICE_SECONDS
        outcomes = []
        for row in rows:
            if self._must_stop():
                break
            outcome = self._run_item(row)
            outcomes.append(outcome)
            if self.stops_on_failure and outcome.status == Item.Status.FAILED:
                break
            if time.monotonic() > deadline:
                break
        return outcomes

    def _must_stop(self) -> bool:
        """Return True if the batch was stopped, cancelled, paused or deleted since we looked."""
        due = self.watch.due()
        if not due:
            return False
        batches = Batch.objects.filter(pk=self.batch_id).values_list("status", "paused_at")
        if due == "nudged":
            # The row lock waits for the transaction that nudged us to commit.
            with transaction.atomic():
                state = batches.select_for_update().first()
        else:
            state = batches.first()
        if state is None:
            return True
        status, paused_at = state
        return status not in (Batch.Status.COMMITTED, Batch.Status.RUNNING) or bool(paused_at)

    def _hand_back(self, cursor: int) -> bool:
        """Give a paused batch's chunk back, held, with its unstarted items queued again.

        Runs under the batch's row lock, so a resume either comes before (and we go on)
        or after (and its release sends this chunk again). Returns False if not paused.
        """
        batch = Batch.objects.select_for_update().filter(pk=self.batch_id).first()
        if batch is None or not batch.paused_at:
            return False
        items_move(
            batch_id=self.batch_id,
            from_statuses=[Item.Status.RUNNING],
            to_status=Item.Status.QUEUED,
            where=Q(index__gte=cursor, index__lt=self.chunk.end_index),
            started_at=None,
        )
        # A clean hand-back is no worker death: take back the attempt our claim counted.
        Chunk.objects.filter(pk=self.chunk.pk, lease_owner=self.owner).update(
            status=Chunk.Status.QUEUED,
            lease_owner="",
            lease_expires_at=None,
            enqueued_at=None,
            attempts=F("attempts") - 1,
        )
        return True

    def _renew(self) -> bool:
        return lease_renew(chunk=self.chunk, owner=self.owner)

    def _start_batch(self) -> None:
        started = Batch.objects.filter(pk=self.batch_id, status=Batch.Status.COMMITTED).update(
            status=Batch.Status.RUNNING, started_at=timezone.now()
        )
        if started:
            event_record(batch=self.chunk.batch, kind="started", actor=self.owner)

    def _next_slice(self, cursor: int) -> list[dict]:
        """Select the next items of our range and mark the queued ones running."""
        rows = list(
            Item.objects.filter(
                batch_id=self.batch_id,
                index__gte=cursor,
                index__lt=self.chunk.end_index,
                status__in=[Item.Status.QUEUED, Item.Status.RUNNING],
            )
            .order_by("index")
            .values("id", "index", "external_id", "type", "payload", "input_file", "attempts")[
                : self.slice_size
            ]
        )
        if rows:
            # Items already `running` were left by a worker that died; they count as running.
            items_move(
                batch_id=self.batch_id,
                from_statuses=[Item.Status.QUEUED],
                to_status=Item.Status.RUNNING,
                where=Q(index__gte=rows[0]["index"], index__lte=rows[-1]["index"]),
                started_at=timezone.now(),
            )
        return rows

    def _run_item(self, row: dict) -> Outcome:
        job_type = get_job_type(row["type"])
        attempts = row["attempts"]
        if job_type is None:
            return self._failed(row, attempts, "unknown_type", f"job type {row['type']!r} is gone")
        limit = job_type.time_limit_for(row["payload"])
        while True:
            attempts += 1
            context = JobContext(
                attempt=attempts,
                label=f"{self.batch_id}#{row['index']}",
                input_name=row["external_id"] if row["input_file"] else "",
                output_dir=self.output_dir,
            )
            try:
                with time_limit(limit):
                    result = self._call(job_type, row, context)
            except ItemTimeout:
                outputs_discard(context.outputs)
                message = f"took longer than its time limit of {limit:g}s"
                if not job_type.timeouts_transient:
                    return self._failed(row, attempts, "timeout", message)
                if attempts >= job_type.max_attempts:
                    message = f"gave up after {attempts} attempts: {message}"
                    return self._failed(row, attempts, "timeout", message)
                time.sleep(self._backoff(job_type, attempts))
                continue
            except TransientError as exc:
                outputs_discard(context.outputs)
                if attempts >= job_type.max_attempts:
                    message = f"gave up after {attempts} attempts: {exc.message}"
                    return self._failed(row, attempts, exc.code, message)
                time.sleep(self._backoff(job_type, attempts))
                continue
            except PermanentError as exc:
                outputs_discard(context.outputs)
                return self._failed(row, attempts, exc.code, exc.message)
            except Exception as exc:  # a crashing job type fails its item, never the worker
                outputs_discard(context.outputs)
                logger.warning(
                    "item %s crashed: %r",
                    context.label,
                    exc,
                    exc_info=True,
                    extra={"batch": str(self.batch_id), "item": row["index"]},
                )
                return self._failed(row, attempts, "exception", f"{type(exc).__name__}: {exc}")
            try:
                result_json = bulk.json_text(result)
            except (TypeError, ValueError) as exc:
                outputs_discard(context.outputs)
                return self._failed(row, attempts, "bad_result", f"result is not JSON: {exc}")
            return Outcome(
                item_id=row["id"],
                index=row["index"],
                status=Item.Status.SUCCEEDED,
                attempts=attempts,
                result_json=result_json,
                output_files_json=outputs_json(context.outputs),
                finished_at=timezone.now(),
            )

    def _call(self, job_type, row: dict, context: JobContext) -> Any:
        if self.atomic and job_type.defer_in_atomic:
            job_type.prepare(row["payload"])
            return DEFERRED_RESULT
        if not row["input_file"]:
            return job_type.process(row["payload"], None, context)
        with open(Path(settings.MEDIA_ROOT) / row["input_file"], "rb") as file:
            return job_type.process(row["payload"], file, context)

    @staticmethod
    def _backoff(job_type, attempts: int) -> float:
        delay = min(job_type.retry_backoff * 2 ** (attempts - 1), job_type.retry_backoff_max)
        return delay * random.uniform(0.5, 1.0)

    def _failed(self, row: dict, attempts: int, code: str, message: str) -> Outcome:
        return Outcome(
            item_id=row["id"],
            index=row["index"],
            status=Item.Status.FAILED,
            attempts=attempts,
            error_code=code[:100],
            error_message=message,
            finished_at=timezone.now(),
        )

    def _write(self, outcomes: list[Outcome]) -> None:
        """Store a slice's outcomes and move the counters, then trip the failure policy."""
        tally = Counter(o.status for o in outcomes)
        deltas = {Item.Status.RUNNING: -len(outcomes), **tally}
        changes = {
            counter_field(status): F(counter_field(status)) + n for status, n in deltas.items()
        }
        # Taking seq numbers in the same UPDATE as the counters holds the batch row until
        # commit, so outcomes become visible in seq order and a results cursor never skips.
        now = timezone.now()
        Batch.objects.filter(pk=self.batch_id).update(
            last_seq=F("last_seq") + len(outcomes), last_outcome_at=now, **changes
        )
        first_seq = rate_window_move(batch_id=self.batch_id, now=now) - len(outcomes) + 1
        bulk.outcomes_write(
            batch_id=self.batch_id,
            first_index=outcomes[0].index,
            last_index=outcomes[-1].index,
            rows=[
                (
                    o.status,
                    o.result_json,
                    o.error_code,
                    o.error_message,
                    o.attempts,
                    o.output_files_json,
                    o.finished_at,
                    first_seq + offset,
                    o.item_id,
                )
                for offset, o in enumerate(outcomes)
            ],
        )
        if tally[Item.Status.FAILED]:
            failure_policy_apply(batch_id=self.batch_id, actor=self.owner)

    def _cancel_rest(self, cursor: int) -> None:
        items_move(
            batch_id=self.batch_id,
            from_statuses=[Item.Status.QUEUED, Item.Status.RUNNING],
            to_status=Item.Status.CANCELLED,
            where=Q(index__gte=cursor, index__lt=self.chunk.end_index),
            finished_at=timezone.now(),
        )

    def _close(self) -> None:
        Chunk.objects.filter(pk=self.chunk.pk, lease_owner=self.owner).update(
            status=Chunk.Status.DONE, finished_at=timezone.now()
        )


def rate_window_move(*, batch_id, now) -> int:
    """Slide the batch's rate window after a write; return its last_seq.

    Runs in the writer's transaction, after its UPDATE locked the batch row.
    """
    window = Batch.objects.values("last_seq", "rate_from_at", "rate_mid_at").get(pk=batch_id)
    last_seq = window["last_seq"]
    half = timedelta(seconds=settings.BATCHSITE_RATE_WINDOW_SECONDS / 2)
    if window["rate_from_at"] is None:
        Batch.objects.filter(pk=batch_id).update(
            rate_from_at=now, rate_from_seq=last_seq, rate_mid_at=now, rate_mid_seq=last_seq
        )
    elif now - window["rate_mid_at"] >= half:
        Batch.objects.filter(pk=batch_id).update(
            rate_from_at=F("rate_mid_at"),
            rate_from_seq=F("rate_mid_seq"),
            rate_mid_at=now,
            rate_mid_seq=last_seq,
        )
    return last_seq


def chunk_process(*, chunk_id: int) -> str:
    """Claim and run one chunk; return what happened, for logs."""
    owner = worker_name()
    chunk = chunk_claim(chunk_id=chunk_id, owner=owner)
    if chunk is None:
        return "not claimable"
    return ChunkRunner(chunk=chunk, owner=owner).run()
