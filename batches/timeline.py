"""The batch timeline and its counters: record events, move items and counters together.

A leaf over the models: the engine, services and webhooks all use it, and it imports
none of them, so they never import each other in a circle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from django.db.models import F, Q

from batches.models import Batch, BatchEvent, Item, counter_field


def event_record(*, batch: Batch, kind: str, actor: str = "", detail: dict | None = None):
    """Add an entry to the batch's timeline."""
    return BatchEvent.objects.create(batch=batch, kind=kind, actor=actor, detail=detail or {})


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
    **values: Any,
) -> int:
    """Move items from some statuses to another, keeping the batch counters in step.

    Call it inside a transaction that holds the batch or the chunk; returns the number moved.
    """
    moved = 0
    deltas: Counter[str] = Counter()
    for status in from_statuses:
        if status == to_status:
            continue
        items = Item.objects.filter(batch_id=batch_id, status=status)
        if where is not None:
            items = items.filter(where)
        count = items.update(status=to_status, **values)
        deltas[status] -= count
        deltas[to_status] += count
        moved += count
    counters_apply(batch_id, deltas)
    return moved
