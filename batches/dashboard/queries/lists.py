"""The batch list: filtered, sorted rows with their progress, rate and state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import F, FloatField, QuerySet
from django.db.models.functions import Cast, NullIf
from django.utils import timezone

from batches.dashboard.queries.common import (
    LIVE_STATUSES,
    batch_rate,
    is_stuck,
    percent_label,
    rate_label,
    stuck_minutes,
)
from batches.models import Batch

BATCHES_PER_PAGE = 25

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
    batches = Batch.objects.select_related("account").defer("metadata").with_unfolded_counts()
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
