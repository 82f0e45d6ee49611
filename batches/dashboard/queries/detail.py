"""One batch: its summary, throughput chart, actions, events, errors, deliveries and items."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncMinute, TruncSecond
from django.utils import timezone

from batches import exports, selectors
from batches.dashboard import charts
from batches.dashboard.queries.common import (
    LIVE_STATUSES,
    _duration_label,
    batch_rate,
    is_stuck,
    last_progress_at,
    percent_label,
    rate_label,
    stuck_minutes,
)
from batches.models import Batch, BatchError, BatchEvent, Item, WebhookDelivery

ITEMS_PER_PAGE = 50
EVENTS_SHOWN = 100
ERRORS_SHOWN = 20
DELIVERIES_SHOWN = 20
CHART_BUCKETS = 60


@dataclass(frozen=True)
class CountCell:
    """One item status and how many of the batch's items are in it."""

    status: str
    count: int


@dataclass(frozen=True)
class Series:
    """Items ended per time bucket, oldest first."""

    starts: list[datetime]
    counts: list[int]
    bucket_seconds: int

    @property
    def rates(self) -> list[float]:
        """Return items per second in each bucket."""
        return [count / self.bucket_seconds for count in self.counts]


def _floor(moment: datetime, seconds: int) -> datetime:
    moment = moment.astimezone(UTC).replace(microsecond=0)
    return moment.replace(second=0) if seconds == 60 else moment


def throughput_series(
    batch: Batch, *, now: datetime | None = None, buckets: int = CHART_BUCKETS
) -> Series | None:
    """Count the batch's items ended per second (short runs) or minute, in one query.

    Covers the batch's run up to its end (or now), bounded to the last `buckets` buckets.
    Cancelled items are left out: a cancel ends thousands at once and is no throughput.
    """
    begin = batch.started_at or batch.committed_at
    if begin is None:
        return None
    now = now or timezone.now()
    end = batch.finished_at if batch.is_terminal and batch.finished_at else now
    end = max(end, begin)
    seconds = 1 if (end - begin).total_seconds() < buckets else 60
    last = _floor(end, seconds)
    if not batch.is_terminal and last > _floor(begin, seconds):
        # The bucket still being filled would show as a drop; chart only complete ones.
        last -= timedelta(seconds=seconds)
    first = max(_floor(begin, seconds), last - timedelta(seconds=seconds * (buckets - 1)))
    truncate = TruncSecond if seconds == 1 else TruncMinute
    rows = (
        Item.objects.filter(
            batch=batch,
            status__in=[Item.Status.SUCCEEDED, Item.Status.FAILED],
            finished_at__gte=first,
            finished_at__lt=last + timedelta(seconds=seconds),
        )
        .annotate(bucket=truncate("finished_at", tzinfo=UTC))
        .order_by()
        .values("bucket")
        .annotate(n=Count("pk"))
        .values_list("bucket", "n")
    )
    found = {bucket.astimezone(UTC): n for bucket, n in rows}
    starts = []
    moment = first
    while moment <= last:
        starts.append(moment)
        moment += timedelta(seconds=seconds)
    return Series(
        starts=starts, counts=[found.get(start, 0) for start in starts], bucket_seconds=seconds
    )


def throughput_chart(batch: Batch) -> charts.LineChart | None:
    """Return the batch's throughput-over-time chart, or None before it ever ran."""
    series = throughput_series(batch)
    if series is None:
        return None
    time_format = "%H:%M:%S" if series.bucket_seconds == 1 else "%H:%M"
    return charts.line_chart(series.rates, series.starts, time_format=time_format)


@dataclass(frozen=True)
class BatchAction:
    """An action the batch's page offers now."""

    name: str
    label: str
    danger: bool = False


def batch_actions(batch: Batch) -> list[BatchAction]:
    """Return the actions worth offering for the batch's current state.

    Only a convenience: the services decide, and refuse with their own message.
    """
    actions = []
    if batch.paused_at is not None and not batch.is_terminal:
        actions.append(BatchAction("resume", "Resume"))
    elif batch.status in (Batch.Status.COMMITTED, Batch.Status.RUNNING):
        actions.append(BatchAction("pause", "Pause"))
    if batch.status not in Batch.TERMINAL and batch.status not in (
        Batch.Status.CANCELLING,
        Batch.Status.FINALIZING,
    ):
        actions.append(BatchAction("cancel", "Cancel", danger=True))
    if batch.is_terminal:
        actions.append(BatchAction("rerun-failed", "Rerun failed"))
        actions.append(BatchAction("rerun-all", "Rerun all"))
    actions.append(BatchAction("delete", "Delete", danger=True))
    return actions


@dataclass
class BatchSummary:
    """A batch's header: state, progress, speed, counts, chart and what can be done."""

    batch: Batch
    percent: str
    rate: str
    eta: datetime | None
    eta_in: str
    live: bool
    stuck: bool
    last_progress: datetime
    counts: list[CountCell]
    counts_by_type: dict[str, dict[str, int]]
    chart: charts.LineChart | None
    actions: list[BatchAction]
    package_ready: bool
    # Why the package cannot be downloaded now, when it cannot.
    package_note: str
    # Whether its label, metadata, priority, concurrency and deadline may still change.
    changeable: bool


def batch_summary(batch: Batch) -> BatchSummary:
    """Return the live header of a batch's page."""
    now = timezone.now()
    eta = batch.estimated_completion()
    package_refusal = exports.package_refusal(batch)
    return BatchSummary(
        batch=batch,
        percent=percent_label(batch),
        rate=rate_label(batch_rate(batch)),
        eta=eta,
        eta_in=_duration_label((eta - now).total_seconds()) if eta else "",
        live=batch.status in LIVE_STATUSES,
        stuck=is_stuck(batch, now=now, minutes=stuck_minutes()),
        last_progress=last_progress_at(batch),
        counts=[
            CountCell(status=status, count=count)
            for status, count in batch.counts().items()
            if status != "total"
        ],
        counts_by_type=selectors.batch_counts_by_type(batch=batch),
        chart=throughput_chart(batch),
        actions=batch_actions(batch),
        package_ready=package_refusal is None,
        package_note=package_refusal.message if package_refusal else "",
        changeable=batch.status in Batch.CHANGEABLE,
    )


def pretty_json(value: Any) -> str:
    """Render a JSON value indented for reading."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class EventRow:
    """One timeline entry."""

    event: BatchEvent
    detail: str


def batch_events(batch: Batch) -> tuple[list[EventRow], int]:
    """Return the batch's latest events, oldest first, and how many there are in all."""
    latest = list(batch.events.order_by("-created_at", "-id")[:EVENTS_SHOWN])
    total = len(latest)
    if total == EVENTS_SHOWN:
        total = batch.events.count()
    rows = [
        EventRow(
            event=event,
            detail=json.dumps(event.detail, separators=(", ", ": ")) if event.detail else "",
        )
        for event in reversed(latest)
    ]
    return rows, total


def batch_errors(batch: Batch) -> list[BatchError]:
    """Return the batch's first recorded errors (refused lines, batch-level failures)."""
    return list(batch.errors.order_by("id")[:ERRORS_SHOWN])


def batch_deliveries(batch: Batch) -> list[WebhookDelivery]:
    """Return the batch's latest webhook deliveries, newest first."""
    return list(batch.deliveries.order_by("-created_at", "-id")[:DELIVERIES_SHOWN])


def failed_items(batch: Batch) -> list[Item]:
    """Return the batch's first failed items with their error."""
    return list(
        batch.items.filter(status=Item.Status.FAILED)
        .order_by("index")
        .only("id", "batch_id", "index", "external_id", "type", "error_code", "error_message")[
            :ERRORS_SHOWN
        ]
    )


ITEM_LIST_FIELDS = (
    "id", "batch_id", "index", "external_id", "type", "status", "attempts",
    "error_code", "finished_at",
)  # fmt: skip


def items_page(
    batch: Batch, filters: dict[str, Any], *, after: int = -1, limit: int | None = None
) -> tuple[list[Item], int | None]:
    """Return a page of the batch's items after index `after`, and the cursor of the next."""
    limit = limit or ITEMS_PER_PAGE
    items = batch.items.filter(index__gt=after)
    if filters.get("status"):
        items = items.filter(status=filters["status"])
    if filters.get("type"):
        items = items.filter(type=filters["type"])
    if filters.get("external_id"):
        items = items.filter(external_id=filters["external_id"])
    page = list(items.order_by("index").only(*ITEM_LIST_FIELDS)[: limit + 1])
    if len(page) > limit:
        page = page[:limit]
        return page, page[-1].index
    return page, None


@dataclass
class ItemDetail:
    """One item with its payload, result and error, ready to read."""

    item: Item
    payload: str
    result: str
    result_hidden: bool
    output_names: list[str]


def item_detail(batch: Batch, item: Item) -> ItemDetail:
    """Return an item's details; its result and output files only if the batch shows them."""
    hidden = not batch.results_visible
    return ItemDetail(
        item=item,
        payload=pretty_json(item.payload),
        result="" if hidden or item.result is None else pretty_json(item.result),
        result_hidden=hidden,
        output_names=[]
        if hidden
        else [output.get("name", "") for output in item.output_files or []],
    )
