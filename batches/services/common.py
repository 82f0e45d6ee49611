"""What the services share: sequence numbers, batch row locks, job-type readiness."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import F

from batches.exceptions import JobTypeNotReady, NotFound
from batches.models import Batch, Sequence
from jobs import get_job_type


def sequence_next(name: str) -> int:
    """Return the next number of the named sequence; call inside a transaction."""
    Sequence.objects.get_or_create(name=name)
    Sequence.objects.filter(name=name).update(last=F("last") + 1)
    return Sequence.objects.values_list("last", flat=True).get(name=name)


def batch_lock(batch: Batch | Any) -> Batch:
    """Re-fetch the batch with a row lock; NotFound if it was deleted meanwhile."""
    pk = batch.pk if isinstance(batch, Batch) else batch
    locked = Batch.objects.for_update().filter(pk=pk).first()
    if locked is None:
        raise NotFound("batch not found")
    return locked


# --- accounts and keys --------------------------------------------------------------------------


def job_types_ready_check(types: Iterable[str]) -> None:
    """Refuse items of job types that cannot run here yet, saying how to make them ready."""
    unready = {}
    for name in sorted(set(types)):
        job_type = get_job_type(name)
        message = job_type.readiness() if job_type is not None else None
        if message:
            unready[name] = message
    if unready:
        raise JobTypeNotReady(
            "; ".join(f"job type {name!r} is not ready: {why}" for name, why in unready.items()),
            extra={"job_types": list(unready)},
        )
