"""The batch domain's tables: accounts and keys, batches, items, chunks, errors, events.

Batches, items, chunks and errors are here; `accounts` holds the tenants, their keys and
the engine's counters and locks, `events` the timeline and webhook deliveries, `tallies`
the running totals of ended items that the metrics read.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone

from batches.models.accounts import Account, ApiKey, Lock, Sequence
from batches.models.events import BatchEvent, WebhookAttempt, WebhookDelivery, WebhookProgress
from batches.models.tallies import ItemTally


class BatchQuerySet(models.QuerySet["Batch"]):
    """Reusable batch filters."""

    def for_account(self, account: Account) -> BatchQuerySet:
        """Return the batches one account may see."""
        return self.filter(account=account)

    def active(self) -> BatchQuerySet:
        """Return batches that workers still have to deal with."""
        return self.filter(status__in=Batch.ACTIVE)

    def for_update(self) -> BatchQuerySet:
        """Lock the rows to the end of the transaction, as every batch lock must.

        FOR NO KEY UPDATE, not FOR UPDATE: no one changes a batch's key, and a worker's
        commit checks the foreign keys of chunk and item rows it wrote twice with FOR KEY
        SHARE on their batch. Under FOR UPDATE that check would wait for a cancel that
        itself waits for the worker's chunk: a deadlock.
        """
        return self.select_for_update(no_key=True)

    def with_unfolded_counts(self) -> BatchQuerySet:
        """Read, with each batch, the counter moves its chunks hold (see Batch.counts)."""
        return self.annotate(
            **{
                f"unfolded_{status}": Coalesce(
                    models.Subquery(
                        Chunk.objects.filter(batch_id=models.OuterRef("pk"))
                        .order_by()
                        .values("batch_id")
                        .annotate(total=models.Sum(delta_field(status)))
                        .values("total")
                    ),
                    0,
                )
                for status in DELTA_STATUSES
            }
        )


# What a batch that names no webhook events is sent: its end (`batch.<its final state>`).
BATCH_ENDED = "batch.ended"
BATCH_PROGRESS = "batch.progress"
ITEM_FAILED = "item.failed"


def webhook_events_default() -> list[str]:
    """Return the webhook events of a batch that names none: its end."""
    return [BATCH_ENDED]


class Batch(models.Model):
    """A set of items processed together, with its options, state and counters."""

    class Status(models.TextChoices):
        CREATED = "created"
        INGESTING = "ingesting"
        OPEN = "open"
        COMMITTED = "committed"
        RUNNING = "running"
        CANCELLING = "cancelling"
        FINALIZING = "finalizing"
        FINISHED = "finished"
        STOPPED = "stopped"
        CANCELLED = "cancelled"
        FAILED = "failed"
        EXPIRED = "expired"

    TERMINAL = frozenset(
        {Status.FINISHED, Status.STOPPED, Status.CANCELLED, Status.FAILED, Status.EXPIRED}
    )
    ACCEPTS_ITEMS = frozenset({Status.CREATED, Status.OPEN})
    ACTIVE = frozenset({Status.COMMITTED, Status.RUNNING, Status.CANCELLING, Status.FINALIZING})
    # The webhook events a batch may ask for: its end (any, or one final state), its
    # progress while it runs, and its failed items, a delivery per slice that had some.
    WEBHOOK_EVENTS = (
        BATCH_ENDED,
        *(f"batch.{status}" for status in sorted(TERMINAL)),
        BATCH_PROGRESS,
        ITEM_FAILED,
    )
    # Not yet winding down, so PATCH batches/{id}/ may still change how it runs.
    CHANGEABLE = frozenset(
        {Status.CREATED, Status.INGESTING, Status.OPEN, Status.COMMITTED, Status.RUNNING}
    )
    # Longest retention the API takes: a century, a date Python can still compute back to.
    MAX_RETENTION_DAYS = 36_500

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    number = models.BigIntegerField(unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="batches")
    type = models.CharField(max_length=100, help_text="Default job type of the batch's items.")
    label = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    stop_on_error = models.BooleanField(default=False)
    max_failures = models.PositiveIntegerField(null=True, blank=True)
    atomic = models.BooleanField(default=False)
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="A committed batch waits until then to start."
    )
    deadline = models.DateTimeField(
        null=True, blank=True, help_text="Unfinished work is cancelled then; the batch expires."
    )
    retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Days an ended batch is kept; default from settings."
    )

    source_url = models.URLField(
        max_length=2000, blank=True, help_text="A file of items a worker downloads and reads."
    )
    commit_on_ingest = models.BooleanField(
        default=False, help_text="Commit as soon as the source has been read."
    )
    callback_url = models.URLField(
        max_length=2000, blank=True, help_text="Receives a signed POST when the batch ends."
    )
    webhook_events = models.JSONField(
        default=webhook_events_default,
        blank=True,
        help_text="The events posted to callback_url (see WEBHOOK_EVENTS).",
    )
    priority = models.SmallIntegerField(
        default=0, help_text="Workers take chunks of higher-priority batches first."
    )
    max_concurrency = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most chunks of this batch in flight at once."
    )
    paused_at = models.DateTimeField(
        null=True, blank=True, help_text="While set, workers claim no new chunk of the batch."
    )

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CREATED)
    # The terminal state a `cancelling` batch winds down to: cancelled, stopped or failed.
    ending = models.CharField(max_length=20, choices=Status.choices, blank=True)
    # Set when an item of another type than the batch's own is added (types never change):
    # counts by type and chunk planning need no look at the items of a one-type batch.
    item_types_mixed = models.BooleanField(default=False)
    superseded = models.BooleanField(default=False)
    # The X-Request-ID of the request that created, committed or last re-ran the batch:
    # workers put it on their log lines about the batch (batchsite.requestid).
    request_id = models.CharField(max_length=64, blank=True)

    total_items = models.BigIntegerField(default=0)
    pending_items = models.BigIntegerField(default=0)
    queued_items = models.BigIntegerField(default=0)
    running_items = models.BigIntegerField(default=0)
    succeeded_items = models.BigIntegerField(default=0)
    failed_items = models.BigIntegerField(default=0)
    cancelled_items = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    # Hands out Item.seq, the order for results paging: a worker reserves the numbers of a
    # slice's outcomes before it writes them (Chunk.pending_seq), so numbers may be skipped.
    last_seq = models.BigIntegerField(default=0)
    # The item rate is measured over a moving window: items ended since `rate_from` (when
    # the ended counters summed to `rate_from_ended`), which moves up to `rate_mid` every
    # half window.
    last_outcome_at = models.DateTimeField(null=True, blank=True)
    rate_from_at = models.DateTimeField(null=True, blank=True)
    rate_from_ended = models.BigIntegerField(default=0)
    rate_mid_at = models.DateTimeField(null=True, blank=True)
    rate_mid_ended = models.BigIntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    committed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = BatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-number"]
        verbose_name_plural = "batches"
        indexes = [
            models.Index(fields=["account", "-created_at"], name="batch_account_created"),
            models.Index(fields=["account", "status"], name="batch_account_status"),
            models.Index(fields=["status"], name="batch_status"),
        ]

    def __str__(self) -> str:
        return f"batch {self.number} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        """Return True when the batch has reached a final state."""
        return self.status in self.TERMINAL

    @property
    def results_visible(self) -> bool:
        """Return True when clients may see the items' results and output files.

        An atomic batch publishes all of its results or none, so they stay hidden until it
        has finished. This is the one copy of the rule: the API, the dialects, exports,
        packages, the dashboard and the admin all ask it.
        """
        return not self.atomic or self.status == self.Status.FINISHED

    def notifies(self, event: str) -> bool:
        """Return True if the batch's callback_url is to be sent `event`.

        The end of a batch is sent as `batch.<final state>`: asked for by that name, or by
        `batch.ended` for any end.
        """
        if not self.callback_url:
            return False
        events = self.webhook_events or []
        if event in events:
            return True
        return event.removeprefix("batch.") in self.TERMINAL and BATCH_ENDED in events

    @property
    def ended_items(self) -> int:
        """Return how many items have reached a final state."""
        counts = self.counts()
        return sum(counts[status] for status in Item.ENDED)

    @property
    def progress(self) -> float:
        """Return the share of items that have ended, from 0 to 1."""
        if not self.total_items:
            return 1.0 if self.is_terminal else 0.0
        return round(self.ended_items / self.total_items, 4)

    @property
    def throughput(self) -> float | None:
        """Return items ended per second over the recent window, or None without data."""
        if not (self.rate_from_at and self.last_outcome_at):
            return None
        seconds = (self.last_outcome_at - self.rate_from_at).total_seconds()
        ended = self.ended_items - self.rate_from_ended
        if seconds < 1 or ended < 1:
            return None
        return round(ended / seconds, 2)

    def estimated_completion(self) -> datetime | None:
        """Return when a running batch should end at its recent rate, or None."""
        rate = self.throughput
        if self.status != self.Status.RUNNING or not rate:
            return None
        remaining = self.total_items - self.ended_items
        return timezone.now() + timedelta(seconds=remaining / rate)

    def counts(self) -> dict[str, int]:
        """Return the item counters by status, plus the total.

        A worker writes a slice's counter moves to its chunk and folds them into these
        fields right after (engine.runner); until then, a few milliseconds, or until the
        chunk's next owner settles if the worker died in between, they are added here.
        """
        counts = {
            "total": self.total_items,
            **{status: getattr(self, counter_field(status)) for status in Item.Status.values},
        }
        for status, moved in self.unfolded_counts().items():
            counts[status] += moved
        return counts

    def unfolded_counts(self) -> dict[str, int]:
        """Return the counter moves the batch's chunks hold, read once per loaded batch."""
        if self.status not in self.ACTIVE:
            return {}  # finalize folds every chunk
        if not hasattr(self, "unfolded_queued"):
            sums = Chunk.objects.filter(batch_id=self.pk).aggregate(
                **{f"unfolded_{s}": models.Sum(delta_field(s)) for s in DELTA_STATUSES}
            )
            for name, total in sums.items():
                setattr(self, name, total or 0)
        return {status: getattr(self, f"unfolded_{status}") for status in DELTA_STATUSES}

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        """Reload the batch; its chunks' unfolded counter moves are read again when asked."""
        super().refresh_from_db(*args, **kwargs)
        for status in DELTA_STATUSES:
            self.__dict__.pop(f"unfolded_{status}", None)


def counter_field(status: str) -> str:
    """Return the Batch counter field that counts items in `status`."""
    return f"{status}_items"


def delta_field(status: str) -> str:
    """Return the Chunk field that holds not yet folded moves of the `status` counter."""
    return f"{status}_delta"


# The statuses a worker moves items between, so the ones a Chunk keeps deltas for.
DELTA_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class Item(models.Model):
    """One unit of work in a batch, identified by its 0-based index."""

    class Status(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ENDED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField()
    external_id = models.CharField(max_length=255, blank=True)
    key = models.CharField(max_length=255, blank=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField(default=dict)
    input_file = models.CharField(max_length=500, blank=True)
    # The item's line, row, element or member in the uploaded file or source it came from
    # (0-based, like a refused line's index); it differs from `index` once a line is skipped.
    source_index = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    result = models.JSONField(null=True, blank=True)
    output_files = models.JSONField(default=list, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Position in the batch's stream of written outcomes; a results cursor pages on it.
    seq = models.BigIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "index"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "index"], name="item_batch_index"),
        ]
        indexes = [
            models.Index(fields=["batch", "status", "index"], name="item_batch_status"),
            models.Index(fields=["batch", "external_id"], name="item_batch_external_id"),
            models.Index(fields=["batch", "seq"], name="item_batch_seq"),
            # For `superseded`: which later items redid a key. Partial, so items without
            # a key cost nothing.
            models.Index(
                fields=["key", "status"], name="item_key_status", condition=~models.Q(key="")
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.index} of {self.batch_id} ({self.status})"

    @property
    def is_ended(self) -> bool:
        """Return True when the item has reached a final state."""
        return self.status in self.ENDED


class BatchError(models.Model):
    """A line that could not become an item, or a failure of the batch as a whole."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="errors")
    # DO_NOTHING so deleting a batch's items is one DELETE, not a per-row collection;
    # batch_delete removes the errors first.
    item = models.ForeignKey(
        Item, on_delete=models.DO_NOTHING, null=True, blank=True, related_name="+"
    )
    index = models.BigIntegerField(null=True, blank=True)
    external_id = models.CharField(max_length=255, blank=True)
    code = models.CharField(max_length=100)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["batch", "id"]

    def __str__(self) -> str:
        return f"{self.code} at {self.index}: {self.message[:60]}"


class Chunk(models.Model):
    """A contiguous index range of a batch: the unit of work a worker claims under a lease."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="chunks")
    start_index = models.PositiveIntegerField()
    end_index = models.PositiveIntegerField(help_text="Exclusive.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # When a task for this chunk was last handed to the broker; null while it waits for
    # the batch's not_before. The sweep hands it again if it sat queued for too long.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # Items a worker writes per transaction: the smallest slice size of the chunk's types.
    slice_size = models.PositiveIntegerField(default=100)
    # The first Item.seq its worker reserved for outcomes not yet written. While the chunk
    # runs, results readers stop below it (selectors.results_visible_seq), so a cursor
    # never passes an outcome that commits later.
    pending_seq = models.BigIntegerField(null=True, blank=True)
    # Counter moves the worker wrote with its items but has not yet added to the batch's
    # counters (engine.counters): writing them here keeps the batch row out of the slice.
    queued_delta = models.BigIntegerField(default=0)
    running_delta = models.BigIntegerField(default=0)
    succeeded_delta = models.BigIntegerField(default=0)
    failed_delta = models.BigIntegerField(default=0)
    cancelled_delta = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "start_index"]
        indexes = [
            models.Index(fields=["batch", "status"], name="chunk_batch_status"),
            models.Index(fields=["status", "lease_expires_at"], name="chunk_status_lease"),
        ]

    def __str__(self) -> str:
        return f"chunk [{self.start_index}, {self.end_index}) of {self.batch_id} ({self.status})"


__all__ = [
    "Account",
    "ApiKey",
    "Batch",
    "BatchError",
    "BatchEvent",
    "BatchQuerySet",
    "Chunk",
    "Item",
    "ItemTally",
    "Lock",
    "Sequence",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookProgress",
    "counter_field",
    "delta_field",
]
