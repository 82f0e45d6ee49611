"""`superseded` (from DLCS): a finished batch all of whose item keys a later batch redid.

A finished batch is superseded once every key among its items was processed successfully
by a later finished batch of the same account. Batches whose items carry no key are never
superseded.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef

from batches.models import Batch, Item

# Only this many of the newest earlier batches are looked at when a batch finishes.
CANDIDATES = 50


def is_superseded(batch: Batch) -> bool:
    """Return True if later finished batches of the account redid every key of `batch`."""
    redone = Item.objects.filter(
        key=OuterRef("key"),
        status=Item.Status.SUCCEEDED,
        batch__account_id=batch.account_id,
        batch__status=Batch.Status.FINISHED,
        batch__number__gt=batch.number,
    )
    keyed = Item.objects.filter(batch=batch).exclude(key="")
    return keyed.exists() and not keyed.exclude(Exists(redone)).exists()


def supersede_after_finish(batch: Batch) -> int:
    """Mark the earlier batches that `batch`, just finished, has superseded; return how many.

    The batch itself may finish after later batches that redid its keys, so it is
    checked too.
    """
    superseded_refresh(batch)
    shared_key = Item.objects.filter(
        batch=OuterRef("pk"),
        key__in=Item.objects.filter(batch=batch, status=Item.Status.SUCCEEDED)
        .exclude(key="")
        .values("key"),
    )
    candidates = (
        Batch.objects.filter(
            account_id=batch.account_id,
            status=Batch.Status.FINISHED,
            superseded=False,
            number__lt=batch.number,
        )
        .filter(Exists(shared_key))
        .order_by("-number")[:CANDIDATES]
    )
    superseded = [candidate.pk for candidate in candidates if is_superseded(candidate)]
    if superseded:
        Batch.objects.filter(pk__in=superseded).update(superseded=True)
    return len(superseded)


def superseded_refresh(batch: Batch) -> bool:
    """Recompute one batch's `superseded` flag now; return it."""
    value = batch.status == Batch.Status.FINISHED and is_superseded(batch)
    if value != batch.superseded:
        Batch.objects.filter(pk=batch.pk).update(superseded=value)
        batch.superseded = value
    return value
