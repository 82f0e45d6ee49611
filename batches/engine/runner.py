"""Run one claimed chunk, slice by slice.

Each slice takes two transactions, and the slow one never touches the batch row, so the
slices of one batch commit in parallel:

- the slice transaction renews the lease (a worker whose chunk was taken over writes
  nothing), writes the last slice's outcomes under the `seq` numbers reserved for them,
  adds the counter moves to the chunk's own deltas, and takes the next slice (read, with
  the outcomes' statement made, before the transaction began);
- the settle transaction, a few statements long, holds the batch row: it folds the
  chunk's deltas into the batch counters, reserves `seq` numbers for the next slice
  (Chunk.pending_seq tells results readers to stop below them until they are written),
  slides the rate window, and applies the failure policy, a pause or the batch's start.

A worker asked to stop (`shutdown`) starts no further item; the settle gives its chunk back.

Webhooks beyond a batch's end cost a batch that did not ask for them nothing: the runner
knows from the batch it loaded with its chunk. For one that asked, a slice with failed
items stores its `item.failed` delivery in its write transaction, and a slice that wrote
outcomes may store a `batch.progress` one after it (see batches.webhooks).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from batches import webhooks
from batches.engine import finalize, nudges, shutdown
from batches.engine.attempts import ItemRow, ItemRunner, Outcome
from batches.engine.claim import (
    LeaseKeeper,
    chunk_claim,
    chunk_claim_waiting,
    chunk_give_back,
    chunk_pass_on,
    chunks_release,
    lease_renew,
    worker_name,
)
from batches.engine.finalize import failure_policy_apply
from batches.ingest import bulk
from batches.models import BATCH_PROGRESS, ITEM_FAILED, Batch, Chunk, Item, counter_field
from batches.timeline import chunk_deltas_add, chunk_deltas_fold, event_record, items_move
from batchsite.requestid import request_id_bound

logger = logging.getLogger(__name__)

# A slice that ran at least this long has its successor's items marked `running` as it is
# taken (one more write per item), so readers see slow items run. Quicker slices skip it:
# their items are `queued` until their outcomes land, a tenth of a second later at most.
MARK_RUNNING_AFTER = 0.1
# A full slice that ran in less than this has the next one twice as large, up to
# SLICE_GROWTH times the job type's slice size: quick items then pay the two commits and
# the settle of a slice over more items, while a slice stays well short of
# MARK_RUNNING_AFTER, and outcomes still land every few hundredths of a second.
SLICE_GROW_BELOW = 0.02
SLICE_GROWTH = 16


@dataclass
class SliceEnd:
    """What a slice's write transaction leaves for the settle that follows it."""

    stop: str = ""  # why the worker must stop at once, if it must
    wrote: int = 0  # outcomes written
    failed: bool = False  # one of them failed
    rows: list[ItemRow] = field(default_factory=list)  # the next slice
    closing: bool = False  # the chunk is done (or cancelled): no next slice
    # The batch is paused or the worker stops: give back the range from here.
    hand_back_from: int | None = None
    deltas: Counter[str] = field(default_factory=Counter)  # counter moves, by status


@dataclass(frozen=True)
class Pace:
    """How a chunk's slices ended up: where the next chunk of its batch and size starts."""

    batch_id: Any
    base_size: int  # the job type's slice size
    slice_size: int  # the size the slices grew to
    mark_running: bool


class ChunkRunner:
    """Run one claimed chunk slice by slice, one transaction per slice."""

    def __init__(self, *, chunk: Chunk, owner: str, pace: Pace | None = None):
        self.chunk = chunk
        self.owner = owner
        self.batch_id = chunk.batch_id
        batch = chunk.batch
        self.slice_size = chunk.slice_size
        self.slice_size_max = chunk.slice_size * SLICE_GROWTH
        self.items = ItemRunner(batch_id=self.batch_id, atomic=batch.atomic)
        # With a failure policy, a failed item is written at once so that the policy can
        # stop the batch before this worker starts another item.
        self.stops_on_failure = (
            batch.atomic or batch.stop_on_error or batch.max_failures is not None
        )
        # A batch with max_concurrency sends its next held chunk when one of ours ends.
        self.limited = bool(batch.max_concurrency)
        # The webhook events beyond its end the batch asked for.
        self.notify_failed = batch.notifies(ITEM_FAILED)
        self.notify_progress = batch.notifies(BATCH_PROGRESS)
        # When this worker may next ask to send a progress delivery (time.monotonic()).
        self.progress_asked_at: float | None = None
        # Created before the first look at the batch, so no nudge after it is missed.
        self.watch = nudges.BatchWatch(self.batch_id)
        # The first Item.seq reserved for the outcomes of the slice being run.
        self.reserved_seq = 0
        # SQLite has one writer at a time: the settle joins the slice's transaction there,
        # as a second one would only hand the write lock around once more.
        self.one_writer = connection.vendor == "sqlite"
        self.folded_leftovers = False
        # Whether the next slice's items are marked `running` as it is taken: the first
        # slice of a claim (unless the worker's last chunk showed its batch's items quick),
        # then only after a slice that took long enough for a reader to see its items run.
        # Items of quick slices go from `queued` to their outcome in one write.
        self.mark_running = True
        if pace and pace.batch_id == self.batch_id and pace.base_size == chunk.slice_size:
            # The worker's last chunk was of the same batch and size: its items are as
            # quick (or slow), so start where its slices ended.
            self.slice_size = pace.slice_size
            self.mark_running = pace.mark_running
        self.slice_taken_at = timezone.now()

    @property
    def pace(self) -> Pace:
        """Return how this chunk's slices ended up, for the worker's next chunk."""
        return Pace(self.batch_id, self.chunk.slice_size, self.slice_size, self.mark_running)

    def run(self) -> str:
        """Process the chunk until its range is done, the batch stops, or the lease is lost.

        Under the id of the request that committed (or re-ran) the batch, so the log lines
        about it carry that id, whichever worker runs the chunk and however often.
        """
        keeper = LeaseKeeper(chunk_id=self.chunk.pk, owner=self.owner)
        keeper.start()
        try:
            with request_id_bound(self.chunk.batch.request_id):
                return self._run()
        finally:
            keeper.stop()
            self.watch.close()

    def _run(self) -> str:
        cursor = self.chunk.start_index
        outcomes: list[Outcome] = []
        while True:
            slice_end = self._slice_write(cursor, outcomes)
            if slice_end.stop:
                return slice_end.stop
            if not self.one_writer:
                with transaction.atomic():
                    stop = self._settle(slice_end)
                if stop:
                    return stop
            if self.notify_progress and slice_end.wrote:
                self._progress_notify()
            if slice_end.closing:
                break
            began = time.monotonic()
            outcomes = self._run_slice(slice_end.rows) if slice_end.rows else []
            took = time.monotonic() - began
            self.mark_running = took >= MARK_RUNNING_AFTER
            if len(outcomes) == self.slice_size and took < SLICE_GROW_BELOW:
                self.slice_size = min(self.slice_size * 2, self.slice_size_max)
            if outcomes:
                cursor = outcomes[-1].index + 1
        if self.limited:
            chunks_release(self.batch_id)
        finalize.batch_finalize_if_done(self.batch_id)
        return "done"

    def _slice_write(self, cursor: int, outcomes: list[Outcome]) -> SliceEnd:
        """Write the outcomes and take the next slice, in one transaction without the batch row.

        The statement that writes the outcomes and the read of the next slice are done
        before the transaction, so it holds its locks (on SQLite, the one write lock) only
        for the writes. Reading ahead is safe: nobody but the holder of our lease changes
        the taken items of our range, and the renewal says we held it all along. The
        counter moves go to the chunk's deltas; with one writer (SQLite) the settle runs
        in the transaction too and applies them to the batch directly.
        """
        deltas: Counter[str] = Counter()
        write = self._outcomes_statement(outcomes, deltas) if outcomes else None
        ahead = self._slice_read(cursor)
        with transaction.atomic():
            if not self._renew():
                logger.warning(
                    "chunk %s: lease lost (it ran out or was taken over); the %d outcomes of "
                    "its last slice are not written",
                    self.chunk.pk,
                    len(outcomes),
                    extra={"batch": str(self.batch_id), "chunk": self.chunk.pk},
                )
                return SliceEnd(stop="lease lost")
            end = SliceEnd(wrote=len(outcomes), deltas=deltas)
            if write:
                write.run()
                end.failed = any(o.status == Item.Status.FAILED for o in outcomes)
            state = (
                Batch.objects.filter(pk=self.batch_id).values_list("status", "paused_at").first()
            )
            if state is None:
                return SliceEnd(stop="batch deleted")
            status, paused_at = state
            if status == Batch.Status.CANCELLING:
                self._cancel_rest(cursor, end.deltas)
                end.closing = True
            elif paused_at or shutdown.requested():
                end.hand_back_from = cursor
            else:
                end.rows = self._slice_take(ahead, end.deltas)
                end.closing = not end.rows
            if self.one_writer:
                end.stop = self._settle(end)
            else:
                done = {"status": Chunk.Status.DONE, "finished_at": timezone.now()}
                chunk_deltas_add(self.chunk.pk, end.deltas, **(done if end.closing else {}))
            if self.notify_failed and end.failed:
                # Last, so the batch summary in it counts this slice's outcomes.
                webhooks.items_failed(batch_id=self.batch_id, failures=failures_of(outcomes))
        return end

    def _progress_notify(self) -> None:
        """Ask to send a progress delivery, at most once per period from this worker.

        Whether one is sent is up to the batch's WebhookProgress row (webhooks.batch_progress):
        another worker's may have been sent within the period.
        """
        now = time.monotonic()
        every = settings.BATCHSITE_WEBHOOK_PROGRESS_SECONDS
        if self.progress_asked_at is not None and now < self.progress_asked_at + every:
            return
        self.progress_asked_at = now
        webhooks.batch_progress(batch_id=self.batch_id)

    def _settle(self, end: SliceEnd) -> str:
        """Bring the batch row up to date with the slice just written; hold it briefly.

        Folds the chunk's counter moves into the batch (with any a dead former owner of the
        chunk left on it), reserves seq numbers for the next slice's outcomes, slides the
        rate window, starts the batch, and applies the failure policy or hands the chunk back
        (the batch paused, or the worker stops). Returns why the worker must stop, or "". A
        handful of short statements, plus the failure policy when an item failed.
        """
        now = timezone.now()
        batch = (
            Batch.objects.for_update()
            .filter(pk=self.batch_id)
            .values("status", "last_seq", "rate_from_at", "rate_mid_at", *ENDED_FIELDS)
            .first()
        )
        if batch is None:
            return "batch deleted"
        if self.one_writer:
            # Ours never went to the chunk; a worker that died there may have left some.
            moves = Counter(end.deltas)
            if not self.folded_leftovers:
                moves.update(self._fold_chunk())
                self.folded_leftovers = True
        else:
            # Whatever the chunk holds, ours included: a fold takes what it reads, so
            # finalize, which may get there first once the chunk is done, never adds twice.
            moves = Counter(self._fold_chunk())
        changes: dict[str, Any] = {
            counter_field(s): F(counter_field(s)) + n for s, n in moves.items() if n
        }
        reserve = len(end.rows)
        if reserve:
            changes["last_seq"] = batch["last_seq"] + reserve
        if end.wrote:
            ended = sum(batch[field] for field in ENDED_FIELDS)
            ended += sum(moves[s] for s in Item.ENDED)
            changes["last_outcome_at"] = now
            changes.update(rate_window_changes(window=batch, ended=ended, now=now))
        if batch["status"] == Batch.Status.COMMITTED and end.hand_back_from is None:
            changes.update(status=Batch.Status.RUNNING, started_at=now)
            event_record(batch=self.chunk.batch, kind="started", actor=self.owner)
        if changes:
            Batch.objects.filter(pk=self.batch_id).update(**changes)
        self.reserved_seq = batch["last_seq"] + 1
        closed = {"status": Chunk.Status.DONE, "finished_at": now}
        Chunk.objects.filter(pk=self.chunk.pk, lease_owner=self.owner).update(
            pending_seq=self.reserved_seq if reserve else None,
            **(closed if end.closing and self.one_writer else {}),
        )
        if end.failed and moves.get(Item.Status.FAILED):
            failure_policy_apply(batch_id=self.batch_id, actor=self.owner)
        if end.hand_back_from is not None:
            return chunk_give_back(chunk=self.chunk, owner=self.owner, cursor=end.hand_back_from)
        return ""

    def _fold_chunk(self) -> dict[str, int]:
        return chunk_deltas_fold(batch_id=self.batch_id, chunk_ids=[self.chunk.pk], apply=False)

    def _run_slice(self, rows: list[ItemRow]) -> list[Outcome]:
        """Run the slice's items until it is done, must stop, or has taken its time.

        Before each item the worker asks whether its batch was stopped, cancelled or
        paused (an lseek on the nudge file; a read of the batch every 100 ms); after a
        failure that may trip the batch's failure policy it stops to write it at once.
        A slice also ends early once it has taken BATCHSITE_SLICE_SECONDS, which keeps
        progress live for slow items. Items not reached stay as they are in our range
        and come first in the next slice, or go back to `queued` if the batch paused.
        """
        deadline = time.monotonic() + settings.BATCHSITE_SLICE_SECONDS
        outcomes = []
        for row in rows:
            if self._must_stop():
                break
            outcome = self.items.run(row)
            outcome.was = row["status"]
            outcome.external_id = row["external_id"]
            outcomes.append(outcome)
            if self.stops_on_failure and outcome.status == Item.Status.FAILED:
                break
            if time.monotonic() > deadline:
                break
        return outcomes

    def _must_stop(self) -> bool:
        """Return True if the batch was stopped, cancelled, paused or deleted since we looked,
        or this worker was asked to stop."""
        if shutdown.requested():
            return True
        due = self.watch.due()
        if not due:
            return False
        batches = Batch.objects.filter(pk=self.batch_id)
        if due == "nudged":
            # The row lock waits for the transaction that nudged us to commit.
            with transaction.atomic():
                state = batches.for_update().values_list("status", "paused_at").first()
        else:
            state = batches.values_list("status", "paused_at").first()
        if state is None:
            return True
        status, paused_at = state
        return status not in (Batch.Status.COMMITTED, Batch.Status.RUNNING) or bool(paused_at)

    def _renew(self) -> bool:
        return lease_renew(chunk=self.chunk, owner=self.owner)

    def _slice_read(self, cursor: int) -> list[ItemRow]:
        """Read the next items of our range, from `cursor`: queued, or running if a slice
        left them so (ours, or a worker's that died)."""
        self.slice_taken_at = timezone.now()
        return cast(
            list[ItemRow],
            bulk.slice_read(
                batch_id=self.batch_id,
                start=cursor,
                end=self.chunk.end_index,
                limit=self.slice_size,
            ),
        )

    def _slice_take(self, rows: list[ItemRow], deltas: Counter[str]) -> list[ItemRow]:
        """Take the slice read ahead: mark its queued items running if we mark, else as is."""
        if rows and self.mark_running:
            items_move(
                batch_id=self.batch_id,
                from_statuses=[Item.Status.QUEUED],
                to_status=Item.Status.RUNNING,
                where=Q(index__gte=rows[0]["index"], index__lte=rows[-1]["index"]),
                deltas=deltas,
                started_at=self.slice_taken_at,
            )
            for row in rows:
                row["status"] = Item.Status.RUNNING
        return rows

    def _outcomes_statement(self, outcomes: list[Outcome], deltas: Counter[str]) -> bulk.Statement:
        """Make ready the write of a slice's outcomes, under the seq numbers reserved for
        them, and count the moves it makes."""
        deltas.subtract(o.was for o in outcomes)
        deltas.update(o.status for o in outcomes)
        return bulk.outcomes_update(
            batch_id=self.batch_id,
            first_index=outcomes[0].index,
            last_index=outcomes[-1].index,
            started_at=self.slice_taken_at,
            rows=[
                (
                    o.status,
                    o.result_json,
                    o.error_code,
                    o.error_message,
                    o.attempts,
                    o.output_files_json,
                    o.finished_at,
                    self.reserved_seq + offset,
                    o.item_id,
                )
                for offset, o in enumerate(outcomes)
            ],
        )

    def _cancel_rest(self, cursor: int, deltas: Counter[str]) -> None:
        items_move(
            batch_id=self.batch_id,
            from_statuses=[Item.Status.QUEUED, Item.Status.RUNNING],
            to_status=Item.Status.CANCELLED,
            where=Q(index__gte=cursor, index__lt=self.chunk.end_index),
            deltas=deltas,
            finished_at=timezone.now(),
        )


ENDED_FIELDS = tuple(counter_field(status) for status in sorted(Item.ENDED))


def failures_of(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """Return the failed outcomes as an item.failed webhook lists them."""
    return [
        {
            "index": o.index,
            "external_id": o.external_id,
            "error_code": o.error_code,
            "error_message": o.error_message,
        }
        for o in outcomes
        if o.status == Item.Status.FAILED
    ]


def rate_window_changes(*, window: dict[str, Any], ended: int, now: datetime) -> dict[str, Any]:
    """Return the changes that slide the batch's rate window after a write, if any.

    `window` holds the batch's rate_from_at and rate_mid_at, read under its row lock;
    `ended` is how many of its items have ended, this write included.
    """
    half = timedelta(seconds=settings.BATCHSITE_RATE_WINDOW_SECONDS / 2)
    mid_at = window["rate_mid_at"]
    # Both ends of the window are set and cleared together.
    if window["rate_from_at"] is None or mid_at is None:
        return {
            "rate_from_at": now, "rate_from_ended": ended,
            "rate_mid_at": now, "rate_mid_ended": ended,
        }  # fmt: skip
    if now - mid_at >= half:
        return {
            "rate_from_at": F("rate_mid_at"), "rate_from_ended": F("rate_mid_ended"),
            "rate_mid_at": now, "rate_mid_ended": ended,
        }  # fmt: skip
    return {}


def chunk_process(*, chunk_id: int) -> str:
    """Claim and run one chunk; return what happened, for logs.

    A worker asked to stop claims nothing: it sends the task again for another cluster.
    """
    return _chunk_process(chunk_id=chunk_id)[0]


def _chunk_process(*, chunk_id: int) -> tuple[str, Pace | None]:
    if shutdown.requested():
        return ("passed on" if chunk_pass_on(chunk_id) else "not claimable"), None
    owner = worker_name()
    chunk = chunk_claim(chunk_id=chunk_id, owner=owner)
    if chunk is None:
        return "not claimable", None
    runner = ChunkRunner(chunk=chunk, owner=owner)
    return runner.run(), runner.pace


# A bound on the chunks one task runs besides its own, whatever their size.
MORE_CHUNKS_PER_TASK = 100


def chunks_process(*, chunk_id: int) -> str:
    """Run the task's chunk, then, for a while, chunks whose tasks still wait; say how it went.

    django-q2 hands each cluster a few tasks more than it has free workers, so a batch's
    last chunks can wait in a busy cluster's queue while another cluster's workers idle. A
    worker done with its chunk takes such a chunk itself (the chunk's own task then finds
    it taken, and does the same). It stops when none waits or once the task has run a
    third of its timeout, well before django-q2 would stop it, or once asked to stop.
    """
    deadline = time.monotonic() + settings.BATCHSITE_TASK_TIMEOUT / 3
    outcome, pace = _chunk_process(chunk_id=chunk_id)
    owner = worker_name()
    more = 0
    while more < MORE_CHUNKS_PER_TASK and time.monotonic() < deadline and not shutdown.requested():
        chunk = chunk_claim_waiting(owner=owner)
        if chunk is None:
            break
        runner = ChunkRunner(chunk=chunk, owner=owner, pace=pace)
        runner.run()
        pace = runner.pace
        more += 1
    return f"{outcome}; then {more} waiting chunk(s)" if more else outcome
