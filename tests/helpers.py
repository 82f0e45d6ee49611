"""Assertions about batches, and other small helpers, that many test modules share."""

from __future__ import annotations

import socket

from django.db.models import Count

from batches.models import Batch, BatchEvent, Item


def recount(batch: Batch) -> dict[str, int]:
    """Count the batch's items by status, in the shape of Batch.counts()."""
    rows = (
        Item.objects.filter(batch_id=batch.pk)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    counted = dict.fromkeys(Item.Status.values, 0)
    counted.update(dict(rows))
    counted["total"] = sum(counted.values())
    return counted


def assert_counters_exact(batch: Batch) -> Batch:
    """Assert the stored counters equal a recount of the items; return the fresh batch."""
    batch = Batch.objects.get(pk=batch.pk)
    assert batch.counts() == recount(batch)
    return batch


def kinds(batch: Batch) -> list[str]:
    """Return the kinds of the batch's events, oldest first."""
    return list(
        BatchEvent.objects.filter(batch_id=batch.pk)
        .order_by("created_at", "id")
        .values_list("kind", flat=True)
    )


def statuses(batch: Batch) -> list[str]:
    """Return the batch's item statuses in index order."""
    return list(Item.objects.filter(batch=batch).order_by("index").values_list("status", flat=True))


def refused_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
