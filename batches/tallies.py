"""Keep the running totals of ended items (ItemTally) as batches end, rerun and go away.

The metrics count ended items as the tallies plus a scan of the ended items of active
batches (batchsite.observability). For that sum never to go down, every change that takes
ended items out of the scan puts them in the tallies, in the same transaction:

- a batch reaching a terminal state (finalize, or an uncommitted batch cancelled, expired
  or failed): its ended items are added to its own rows (`tally_batch_end`);
- a rerun, which makes a terminal batch active again: the items it keeps ended are taken
  back out of its rows, since the scan counts them again; the items it resets stay in
  the rows, as the outcomes they had (`tally_batch_reopen`);
- an atomic batch's discarded results: each of those items counted once as succeeded, as
  it ran, and counts again as cancelled once discarded (`tally_results_discarded`);
- a deletion: the batch's totals move to the RETIRED rows (`tally_batch_retire`).

Each runs under the batch's row lock, once per batch end, rerun or deletion: never on a
slice's path. Only a deletion writes rows other batches share (the RETIRED ones, taken in
key order so that two deletions never deadlock). A leaf over the models, like timeline.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from django.db.models import Count, F, FloatField, Func, Q, Sum

from batches.models import Chunk, Item, ItemTally
from batches.models.tallies import BUCKET_FIELDS, DURATION_BUCKETS, RETIRED

# What a tally row counts, besides its key.
TOTAL_FIELDS = ("items", "timed", "seconds", *BUCKET_FIELDS)
Key = tuple[str, str]  # (type, outcome)
Totals = dict[Key, dict[str, Any]]


def item_totals_annotations() -> dict[str, Any]:
    """Return the aggregates that count a queryset of ended items as tally rows do.

    Call `.alias(duration=item_duration())` on the queryset first.
    """
    buckets = {
        field: Count("pk", filter=Q(duration__lte=bound))
        for field, bound in zip(BUCKET_FIELDS, DURATION_BUCKETS, strict=True)
    }
    return {
        "items": Count("pk"),
        "timed": Count("pk", filter=Q(duration__isnull=False)),
        "total": Sum("duration"),
        **buckets,
    }


class ItemSeconds(Func):
    """An item's run time in seconds, finished_at - started_at, as a float (null if unstarted).

    In the database's own arithmetic: Django's duration arithmetic on SQLite calls a Python
    function for every row, which over a million items made a batch's finalize (and a
    scrape) take many seconds.
    """

    output_field = FloatField()

    def as_sql(self, compiler, connection, *args, **extra_context):
        """PostgreSQL: the interval's seconds."""
        finished, started = self._compiled(compiler)
        sql = f"EXTRACT(EPOCH FROM ({finished[0]} - {started[0]}))::double precision"
        return sql, (*finished[1], *started[1])

    def as_sqlite(self, compiler, connection, **extra_context):
        """SQLite: the difference of the Julian days, in seconds."""
        finished, started = self._compiled(compiler)
        sql = f"((julianday({finished[0]}) - julianday({started[0]})) * 86400.0)"
        return sql, (*finished[1], *started[1])

    def _compiled(self, compiler):
        return [compiler.compile(expression) for expression in self.get_source_expressions()]


def item_duration() -> ItemSeconds:
    """Return an item's run time in seconds, finished_at - started_at (null if unstarted)."""
    return ItemSeconds(F("finished_at"), F("started_at"))


def totals_from_rows(rows: Iterable[Mapping[str, Any]]) -> Totals:
    """Turn aggregate rows keyed by `type` and `status` into totals keyed (type, outcome)."""
    totals: Totals = {}
    for row in rows:
        values = {field: row[field] for field in TOTAL_FIELDS if field != "seconds"}
        values["seconds"] = float(row["total"] or 0.0)
        totals[(row["type"], row["status"])] = values
    return totals


def batch_ended_totals(batch_id: uuid.UUID) -> Totals:
    """Return the batch's ended items counted as tally rows, by (type, outcome)."""
    rows = (
        Item.objects.filter(batch_id=batch_id, status__in=Item.ENDED)
        .alias(duration=item_duration())
        .order_by()
        .values("type", "status")
        .annotate(**item_totals_annotations())
    )
    return totals_from_rows(rows)


def _rows_add(batch_id: uuid.UUID, totals: Totals, sign: int = 1) -> None:
    """Add (or with sign -1 take) `totals` to the batch's rows, creating those it lacks.

    In key order, with rows created before any is updated: two writers of the same rows
    (deletions, on the RETIRED rows) wait for each other instead of deadlocking.
    """
    totals = {key: values for key, values in totals.items() if values["items"]}
    if not totals:
        return
    ItemTally.objects.bulk_create(
        [
            ItemTally(batch_id=batch_id, type=job_type, outcome=outcome)
            for job_type, outcome in sorted(totals)
        ],
        ignore_conflicts=True,
    )
    for (job_type, outcome), values in sorted(totals.items()):
        ItemTally.objects.filter(batch_id=batch_id, type=job_type, outcome=outcome).update(
            **{field: F(field) + sign * values[field] for field in TOTAL_FIELDS}
        )


def tally_batch_end(*, batch_id: uuid.UUID) -> None:
    """Count the ended items of a batch that has just reached a terminal state."""
    _rows_add(batch_id, batch_ended_totals(batch_id))


def tally_batch_reopen(*, batch_id: uuid.UUID) -> None:
    """Take the items a rerun keeps ended back out of the batch's rows (the scan counts them).

    Call after the rerun's items have been reset, in its transaction.
    """
    _rows_add(batch_id, batch_ended_totals(batch_id), sign=-1)


def tally_results_discarded(*, batch_id: uuid.UUID) -> None:
    """Count, as succeeded, the items of an atomic batch whose results are about to be dropped.

    Only the count: their durations stay with the items, which the batch's end tallies as
    cancelled.
    """
    rows = (
        Item.objects.filter(batch_id=batch_id, status=Item.Status.SUCCEEDED)
        .order_by()
        .values_list("type")
        .annotate(n=Count("pk"))
    )
    totals: Totals = {}
    for job_type, n in rows:
        values: dict[str, Any] = dict.fromkeys(TOTAL_FIELDS, 0)
        values["items"] = n
        totals[(job_type, Item.Status.SUCCEEDED)] = values
    _rows_add(batch_id, totals)


def tally_batch_retire(*, batch_id: uuid.UUID, ended: bool) -> None:
    """Move a batch's totals to the RETIRED rows; call before its items are deleted.

    An `ended` (terminal) batch's items are in its rows already; any other's ended items
    are counted from the items first, once its chunks are locked (as a wind-down takes
    them, after the batch row): a slice in flight commits its outcomes first, and a later
    one finds the batch gone.
    """
    totals: Totals = {}
    if not ended:
        chunks = Chunk.objects.select_for_update().filter(batch_id=batch_id).order_by("pk")
        list(chunks.values_list("pk", flat=True))
        totals = batch_ended_totals(batch_id)
    for row in ItemTally.objects.filter(batch_id=batch_id).values("type", "outcome", *TOTAL_FIELDS):
        key = (row.pop("type"), row.pop("outcome"))
        into = totals.setdefault(key, dict.fromkeys(TOTAL_FIELDS, 0))
        for field in TOTAL_FIELDS:
            into[field] += row[field]
    _rows_add(RETIRED, totals)
    ItemTally.objects.filter(batch_id=batch_id).delete()
