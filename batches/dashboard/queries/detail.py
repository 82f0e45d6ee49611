"""Reads behind the dashboard: batch lists, a batch's details, the overview, accounts.

Views ask these selectors for plain data and hand it to templates as is; nothing here
writes (state changes go through batches.services).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, F, FloatField, Prefetch, Q, QuerySet
from django.db.models.functions import Cast, Coalesce, Greatest, NullIf, TruncMinute, TruncSecond
from django.utils import timezone

from batches import exports, selectors
from batches.dashboard import charts
from batches.models import Account, ApiKey, Batch, BatchError, BatchEvent, Item, WebhookDelivery

logger = logging.getLogger(__name__)

# Statuses in which a batch changes by itself (workers, ingest): worth polling for.
LIVE_STATUSES = frozenset({*Batch.ACTIVE, Batch.Status.INGESTING})
STATUS_ORDER = list(Batch.Status.values)
BATCHES_PER_PAGE = 25
ITEMS_PER_PAGE = 50
EVENTS_SHOWN = 100
ERRORS_SHOWN = 20
DELIVERIES_SHOWN = 20
CHART_BUCKETS = 60
STUCK_SHOWN = 20

# Sort keys the batch list accepts, and the column each one orders by.
SORTS = {
    "number": "number",
    "status": "status",
    "type": "type",
    "account": "account__name",
    "label": "label",
    "progress": "progress_value",
    "items": "total_items",
    "created": "created_at",
    "finished": "finished_at",
}
DEFAULT_SORT = "-created"


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


# --- the batch list ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchRow:
    """One batch as the list shows it."""

    batch: Batch
    percent: str
    rate: str
    live: bool
    stuck: bool


def batch_row(batch: Batch, *, now: datetime, minutes: int) -> BatchRow:
    """Return the list's view of one batch."""
    return BatchRow(
        batch=batch,
        percent=percent_label(batch),
        rate=rate_label(batch_rate(batch)),
        live=batch.status in LIVE_STATUSES,
        stuck=is_stuck(batch, now=now, minutes=minutes),
    )


def batch_rows(batches) -> list[BatchRow]:
    """Return list rows for the given batches."""
    now = timezone.now()
    minutes = stuck_minutes()
    return [batch_row(batch, now=now, minutes=minutes) for batch in batches]


def batches_filtered(filters: dict[str, Any], sort: str = DEFAULT_SORT) -> QuerySet[Batch]:
    """Return batches matching the list filters (cleaned form data), in the asked order."""
    batches = Batch.objects.select_related("account").defer("metadata")
    status = filters.get("status")
    if status == "live":
        batches = batches.filter(status__in=LIVE_STATUSES)
    elif status == "ended":
        batches = batches.filter(status__in=Batch.TERMINAL)
    elif status:
        batches = batches.filter(status=status)
    if filters.get("type"):
        batches = batches.filter(type=filters["type"])
    if filters.get("account"):
        batches = batches.filter(account=filters["account"])
    if filters.get("created_after"):
        batches = batches.filter(created_at__date__gte=filters["created_after"])
    if filters.get("created_before"):
        batches = batches.filter(created_at__date__lte=filters["created_before"])
    if filters.get("q"):
        batches = batches.filter(label__icontains=filters["q"])
    return _sorted(batches, sort)


def _sorted(batches: QuerySet[Batch], sort: str) -> QuerySet[Batch]:
    descending = sort.startswith("-")
    column = SORTS.get(sort.lstrip("-"), "created_at")
    if column == "progress_value":
        ended = F("succeeded_items") + F("failed_items") + F("cancelled_items")
        batches = batches.annotate(
            progress_value=Cast(ended, FloatField()) / NullIf(F("total_items"), 0)
        )
    order = F(column).desc(nulls_last=True) if descending else F(column).asc(nulls_last=True)
    tiebreak = "-number" if descending else "number"
    return batches.order_by(order, tiebreak)


@dataclass(frozen=True)
class SortColumn:
    """A sortable column header: the sort its link asks for, and where it points now."""

    key: str
    label: str
    next_sort: str
    arrow: str


def sort_columns(sort: str, labels: dict[str, str]) -> dict[str, SortColumn]:
    """Return a header for each sortable column: a click sorts by it, a second click reverses."""
    current = sort.lstrip("-")
    descending = sort.startswith("-")
    columns = {}
    for key, label in labels.items():
        if key == current:
            next_sort, arrow = (key, "▼") if descending else (f"-{key}", "▲")
        else:
            # Dates and sizes read best newest/largest first.
            next_sort = f"-{key}" if key in ("created", "finished", "items", "number") else key
            arrow = ""
        columns[key] = SortColumn(key=key, label=label, next_sort=next_sort, arrow=arrow)
    return columns


# --- the overview --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterInfo:
    """One django-q2 cluster that reported itself alive."""

    host: str
    cluster_id: str
    pid: int
    workers: int
    status: str
    uptime: str


@dataclass(frozen=True)
class StatusCount:
    """How many batches are in one status."""

    status: str
    count: int
    live: bool


@dataclass
class Overview:
    """The overview panel: batches by status, recent work, workers and stuck batches."""

    by_status: list[StatusCount]
    total: int
    live: bool
    items_last_hour: int
    clusters: list[ClusterInfo] | None
    workers_alive: int
    stuck: list[BatchRow] = field(default_factory=list)
    stuck_minutes: int = 10


def clusters_alive() -> list[ClusterInfo] | None:
    """Return the django-q2 clusters whose stats are in the shared cache; None if unreadable."""
    from django_q.status import Stat

    try:
        stats = Stat.get_all()
    except Exception:  # the cache or broker is down: say "unknown", keep the page up
        logger.warning("cannot read django-q2 cluster stats", exc_info=True)
        return None
    clusters = []
    for stat in stats:
        uptime = ""
        if getattr(stat, "tob", None):
            uptime = _duration_label((timezone.now() - stat.tob).total_seconds())
        clusters.append(
            ClusterInfo(
                host=str(getattr(stat, "host", "")),
                cluster_id=str(getattr(stat, "cluster_id", "")),
                pid=int(getattr(stat, "pid", 0) or 0),
                workers=len(getattr(stat, "workers", None) or []),
                status=str(getattr(stat, "status", "")),
                uptime=uptime,
            )
        )
    return sorted(clusters, key=lambda cluster: (cluster.host, cluster.pid))


def _duration_label(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def items_processed_since(since: datetime) -> int:
    """Return how many items succeeded or failed since `since`, over every batch."""
    recent_batches = Batch.objects.filter(
        Q(finished_at__isnull=True) | Q(finished_at__gte=since)
    ).exclude(status__in=[Batch.Status.CREATED, Batch.Status.OPEN])
    return Item.objects.filter(
        batch__in=recent_batches,
        status__in=[Item.Status.SUCCEEDED, Item.Status.FAILED],
        finished_at__gte=since,
    ).count()


def stuck_batches(*, now: datetime, minutes: int) -> list[Batch]:
    """Return active batches that have not moved for `minutes`, longest-stuck first."""
    return list(
        Batch.objects.filter(status__in=Batch.ACTIVE, paused_at__isnull=True)
        .exclude(not_before__gt=now)
        .annotate(last_progress=_last_sign_of_life())
        .filter(last_progress__lt=now - timedelta(minutes=minutes))
        .select_related("account")
        .defer("metadata")
        .order_by("last_progress")[:STUCK_SHOWN]
    )


def overview() -> Overview:
    """Return the overview panel's figures."""
    now = timezone.now()
    minutes = stuck_minutes()
    counts = dict(Batch.objects.order_by().values_list("status").annotate(n=Count("pk")))
    by_status = [
        StatusCount(status=status, count=counts.get(status, 0), live=status in LIVE_STATUSES)
        for status in STATUS_ORDER
    ]
    clusters = clusters_alive()
    stuck = stuck_batches(now=now, minutes=minutes)
    return Overview(
        by_status=by_status,
        total=sum(counts.values()),
        live=any(counts.get(status) for status in LIVE_STATUSES),
        items_last_hour=items_processed_since(now - timedelta(hours=1)),
        clusters=clusters,
        workers_alive=sum(cluster.workers for cluster in clusters or []),
        stuck=[batch_row(batch, now=now, minutes=minutes) for batch in stuck],
        stuck_minutes=minutes,
    )


# --- one batch -----------------------------------------------------------------------------------


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


# --- accounts ------------------------------------------------------------------------------------


def accounts_with_keys() -> QuerySet[Account]:
    """Return every account with its batch count and its keys, newest key first."""
    return Account.objects.annotate(batch_count=Count("batches")).prefetch_related(
        Prefetch("api_keys", queryset=ApiKey.objects.order_by("-created"))
    )
