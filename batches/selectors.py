"""Reads of the batch domain that interfaces and services share: one named query each."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, OuterRef, Subquery

from batches.models import Account, Batch, Chunk, Item


def batch_lookup(reference: str) -> dict[str, Any] | None:
    """Return the filter a batch reference means (a UUID, else a batch number), or None."""
    reference = reference.strip()
    try:
        return {"pk": uuid.UUID(reference)}
    except ValueError:
        pass
    if reference.isdigit():
        return {"number": int(reference)}
    return None


def batch_get_by_reference(*, reference: str) -> Batch | None:
    """Return, with its account, the batch a UUID or a batch number names, or None."""
    lookup = batch_lookup(reference)
    if lookup is None:
        return None
    return Batch.objects.select_related("account").filter(**lookup).first()


def account_get_by_reference(*, reference: str) -> Account | None:
    """Return the account a name names, else the one a number names, or None."""
    found = Account.objects.filter(name=reference).first()
    if found is None and reference.isdigit():
        found = Account.objects.filter(number=int(reference)).first()
    return found


def batch_item_types(*, batch: Batch, statuses: Collection[str] | None = None) -> set[str]:
    """Return the job types of the batch's items (of those in `statuses`, if given)."""
    items = Item.objects.filter(batch_id=batch.pk).order_by()
    if statuses is not None:
        items = items.filter(status__in=statuses)
    if not batch.item_types_mixed:
        if statuses is None:
            return {batch.type} if batch.total_items else set()
        return {batch.type} if items.exists() else set()
    return set(items.values_list("type", flat=True).distinct())


def _no_counts() -> dict[str, int]:
    return {"total": 0, **dict.fromkeys(Item.Status.values, 0)}


def batch_counts_by_type(*, batch: Batch) -> dict[str, dict[str, int]]:
    """Count the batch's items per job type and status, each in the shape of Batch.counts().

    Most batches hold items of their own type only; their counts are the batch counters,
    which move in the same transactions as the items. A mixed batch takes one GROUP BY
    type, status over its items.
    """
    if not batch.total_items:
        return {}
    if not batch.item_types_mixed:
        return {batch.type: batch.counts()}
    rows = (
        Item.objects.filter(batch_id=batch.pk)
        .order_by()
        .values_list("type", "status")
        .annotate(n=Count("id"))
    )
    counts: dict[str, dict[str, int]] = {}
    for type_name, status, n in rows:
        cell = counts.setdefault(type_name, _no_counts())
        cell[status] = n
        cell["total"] += n
    return dict(sorted(counts.items()))


# The statuses whose items a batch's results list.
RESULT_STATUSES = [Item.Status.SUCCEEDED, Item.Status.FAILED]


@dataclass
class ResultsPage:
    """One page of a batch's results: items in the order they ended, and where to go on."""

    items: list[Item]
    statuses: dict[str, int]
    more: bool
    next_after: int | None  # Item.seq is nullable, though an ended item has one


def results_visible_seq(*, batch_id: uuid.UUID) -> int:
    """Return the highest Item.seq up to which every result of the batch is written.

    Workers reserve seq numbers under the batch's row lock (raising last_seq, and marking
    the reservation on their chunk as pending_seq), and only then write the outcomes;
    slices of one batch commit in any order. Below the lowest reservation still pending,
    every number up to last_seq is written or never will be; past that, an outcome may
    still commit, so a cursor stops there. One statement, so both are read in one snapshot.
    """
    pending = (
        Chunk.objects.filter(
            batch_id=OuterRef("pk"), status=Chunk.Status.RUNNING, pending_seq__isnull=False
        )
        .order_by("pending_seq")
        .values("pending_seq")[:1]
    )
    row = (
        Batch.objects.filter(pk=batch_id)
        .annotate(pending=Subquery(pending))
        .values_list("last_seq", "pending")
        .first()
    )
    if row is None:
        return 0
    last_seq, pending_seq = row
    return last_seq if pending_seq is None else min(last_seq, pending_seq - 1)


def results_page(
    *, batch: Batch, after: int, limit: int, type: str | None = None, status: str | None = None
) -> ResultsPage:
    """Return the page of results after the cursor `after` (an item's `seq`).

    Empty while the batch hides its results (Batch.results_visible); `more` stays true
    until the batch has ended, since items may still end after the last one read. Only
    results up to results_visible_seq are read, so a cursor never skips one.
    """
    visible = results_visible_seq(batch_id=batch.pk)
    items = batch.items.filter(
        seq__gt=after, seq__lte=visible, status__in=RESULT_STATUSES
    ).order_by("seq")
    if type:
        items = items.filter(type=type)
    if status:
        items = items.filter(status=status)
    page = list(items[:limit]) if batch.results_visible else []
    statuses = dict(
        batch.items.values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )
    return ResultsPage(
        items=page,
        statuses=statuses,
        more=len(page) == limit or not batch.is_terminal,
        next_after=page[-1].seq if page else after,
    )
