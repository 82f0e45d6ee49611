"""The batch timeline and its counters: record events, move items and counters together.

A leaf over the models: the engine, services and webhooks all use it, and it imports
none of them, so they never import each other in a circle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from django.db.models import F, Q

from batches.models import (
    DELTA_STATUSES,
    Batch,
    BatchEvent,
    Chunk,
    Item,
    counter_field,
    delta_field,
)
from batchsite.requestid import request_id_get


def event_record(*, batch: Batch, kind: str, actor: str = "", detail: dict | None = None):
    """Add an entry to the batch's timeline, with the id of the request it happens for."""
    return BatchEvent.objects.create(
        batch=batch, kind=kind, actor=actor, detail=detail or {}, request_id=request_id_get()
    )


def counters_apply(batch_id, deltas: dict[str, int]) -> None:
    """Move batch counters by `deltas` (status -> change) with F() expressions."""
    changes = {
        counter_field(status): F(counter_field(status)) + delta
        for status, delta in deltas.items()
        if delta
    }
    if changes:
        Batch.objects.filter(pk=batch_id).update(**changes)


def items_move(
    *,
    batch_id,
    from_statuses: Iterable[str],
    to_status: str,
    where: Q | None = None,
    deltas: Counter[str] | None = None,
    **values: Any,
) -> int:
    """Move items from some statuses to another, keeping the batch counters in step.

    Call it inside a transaction that holds the batch or the chunk; returns the number moved.
    With `deltas`, the counter moves are added there instead of to the batch row: a worker
    writes them to its chunk (chunk_deltas_add) and folds them in later.
    """
    moved = 0
    moves: Counter[str] = Counter()
    for status in from_statuses:
        if status == to_status:
            continue
        items = Item.objects.filter(batch_id=batch_id, status=status)
        if where is not None:
            items = items.filter(where)
        count = items.update(status=to_status, **values)
        moves[status] -= count
        moves[to_status] += count
        moved += count
    if deltas is None:
        counters_apply(batch_id, moves)
    else:
        deltas.update(moves)
    return moved


def chunk_deltas_add(chunk_id: int, deltas: Counter[str], **values: Any) -> int:
    """Add counter moves to the chunk's deltas (and set `values`); return the rows updated."""
    changes = {delta_field(status): F(delta_field(status)) + n for status, n in deltas.items() if n}
    if not changes and not values:
        return 0
    return Chunk.objects.filter(pk=chunk_id).update(**changes, **values)


def chunk_deltas_fold(
    *, batch_id, chunk_ids: Iterable[int] | None = None, apply: bool = True
) -> dict[str, int]:
    """Move chunks' counter deltas into the batch counters; return the moves, by status.

    Call it holding the batch's row lock: every fold does, so no delta is folded twice.
    Without `chunk_ids`, every chunk of the batch is folded. With `apply` false, the
    caller adds the returned moves to the batch counters itself, in the same transaction.
    """
    chunks = Chunk.objects.filter(batch_id=batch_id)
    if chunk_ids is not None:
        chunks = chunks.filter(pk__in=list(chunk_ids))
    fields = [delta_field(status) for status in DELTA_STATUSES]
    nonzero = Q()
    for field in fields:
        nonzero |= ~Q(**{field: 0})
    # Locked as they are read, so nothing is added to them before they are zeroed.
    rows = list(chunks.filter(nonzero).select_for_update().order_by("pk").values("pk", *fields))
    if not rows:
        return {}
    Chunk.objects.filter(pk__in=[row["pk"] for row in rows]).update(**dict.fromkeys(fields, 0))
    moves: Counter[str] = Counter()
    for row in rows:
        for status in DELTA_STATUSES:
            moves[status] += row[delta_field(status)]
    if apply:
        counters_apply(batch_id, moves)
    return {status: n for status, n in moves.items() if n}
