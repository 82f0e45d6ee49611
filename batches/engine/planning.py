"""Plan a batch into chunks and hand chunks (and URL sources) to the broker."""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from batches.models import Batch, Chunk, Item
from jobs import get_job_type

logger = logging.getLogger(__name__)


CHUNK_TASK = "batches.tasks.chunk_run"


INGEST_TASK = "batches.tasks.source_ingest"


def type_sizes(type_name: str) -> tuple[int, int]:
    """Return (chunk_size, slice_size) for items of a job type."""
    job_type = get_job_type(type_name)
    if job_type is None:
        return 1000, 100
    return job_type.chunk_size, job_type.slice_size


def chunks_plan(batch: Batch) -> list[int]:
    """Create chunks covering the batch's queued items; return their ids.

    Chunks follow the items' own types, not the batch's: a batch of one type gets chunks
    of that type's size; in a mixed batch each item counts as 1/chunk_size of a chunk,
    so a run of slow http.request items is cut into small chunks that spread over the
    workers while a run of echo items stays in big ones. A chunk's slice size is the
    smallest among its items' types. Ranges with no queued item get no chunk, so a rerun
    of a few failed items in a large batch plans only the chunks it needs.
    """
    queued = Item.objects.filter(batch=batch, status=Item.Status.QUEUED)
    if batch.item_types_mixed:
        chunks = _chunks_mixed(batch, queued)
    else:
        size, slice_size = type_sizes(batch.type)
        buckets = (
            queued.annotate(bucket=F("index") / size)
            .values_list("bucket", flat=True)
            .distinct()
            .order_by("bucket")
        )
        chunks = [
            Chunk(
                batch=batch,
                start_index=bucket * size,
                end_index=(bucket + 1) * size,
                slice_size=slice_size,
            )
            for bucket in buckets
        ]
    return [chunk.pk for chunk in Chunk.objects.bulk_create(chunks)]


def _chunks_mixed(batch: Batch, queued: QuerySet[Item]) -> list[Chunk]:
    """Cut a mixed batch's queued items into chunks weighed by each item's type."""
    sizes: dict[str, tuple[int, int]] = {}
    chunks: list[Chunk] = []
    start: int | None = None
    last = 0  # the index before the current one; read only once start is set
    load = 0.0
    slice_size = 0
    for index, type_name in (
        queued.order_by("index").values_list("index", "type").iterator(chunk_size=10_000)
    ):
        if type_name not in sizes:
            sizes[type_name] = type_sizes(type_name)
        chunk_size, type_slice = sizes[type_name]
        if start is not None and load + 1 / chunk_size > 1 + 1e-9:
            chunks.append(
                Chunk(batch=batch, start_index=start, end_index=last + 1, slice_size=slice_size)
            )
            start = None
        if start is None:
            start, load, slice_size = index, 0.0, type_slice
        load += 1 / chunk_size
        slice_size = min(slice_size, type_slice)
        last = index
    if start is not None:
        chunks.append(
            Chunk(batch=batch, start_index=start, end_index=last + 1, slice_size=slice_size)
        )
    return chunks


def chunks_enqueue(chunk_ids: list[int]) -> None:
    """Hand chunks to django-q2; call outside any transaction that created them."""
    from django_q.tasks import async_task

    Chunk.objects.filter(pk__in=chunk_ids).update(enqueued_at=timezone.now())
    for chunk_id in chunk_ids:
        async_task(CHUNK_TASK, chunk_id, task_name=f"chunk-{chunk_id}")


def ingest_enqueue(batch_id: uuid.UUID | str) -> None:
    """Hand a batch's source download to django-q2; call outside the creating transaction."""
    from django_q.tasks import async_task

    async_task(INGEST_TASK, str(batch_id), task_name=f"ingest-{batch_id}")


def chunks_enqueue_on_commit(batch: Batch, chunk_ids: list[int]) -> None:
    """Queue the batch's chunks once the transaction commits, unless they must wait.

    A batch whose not_before lies ahead, or that is paused, keeps its chunks held (queued,
    with no task out); the sweep or a resume releases them. A batch with max_concurrency
    gets that many tasks; each chunk that ends releases the next.
    """
    if not chunk_ids or batch.paused_at or (batch.not_before and batch.not_before > timezone.now()):
        return
    if batch.max_concurrency:
        chunk_ids = chunk_ids[: batch.max_concurrency]
    transaction.on_commit(lambda: chunks_enqueue(chunk_ids))
