"""Add items to a batch before commit: a list, one uploaded file, or a whole file of items."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, Any, Literal

from django.conf import settings
from django.db import transaction

from batches import files
from batches.exceptions import BatchNotOpen, InvalidInput, TooLarge, UnsupportedMediaType
from batches.ingest import bulk, formats, staging
from batches.ingest.items import ItemProblem, item_parse
from batches.models import Batch, BatchError
from batches.services.common import batch_lock, job_types_ready_check
from batches.timeline import event_record
from jobs import get_job_type


def _item_types_note(batch: Batch, types: Iterable[str]) -> list[str]:
    """Mark the locked batch mixed if `types` hold another type than its own.

    Returns the field to save with the batch's other changes, if it changed.
    """
    if batch.item_types_mixed or all(name == batch.type for name in types):
        return []
    batch.item_types_mixed = True
    return ["item_types_mixed"]


@transaction.atomic
def items_add(*, batch: Batch, items: list[Any], actor: str) -> range:
    """Add items to a batch that is still open; all of them or, on any bad one, none.

    Returns the range of indexes the new items took.
    """
    batch = batch_lock(batch)
    return _items_insert(batch=batch, items=items, actor=actor)


def _batch_room_check(*, batch: Batch, adding: int, field: str) -> None:
    """Refuse, as invalid input on `field`, items that would take the batch over its limit."""
    limit = settings.BATCHSITE_MAX_ITEMS_PER_BATCH
    if batch.total_items + adding > limit:
        raise InvalidInput.for_field(
            field, "too many items for one batch", detail=f"a batch holds at most {limit} items"
        )


def _items_insert(*, batch: Batch, items: list[Any], actor: str) -> range:
    if batch.status not in Batch.ACCEPTS_ITEMS:
        raise BatchNotOpen(f"batch is {batch.status}; items can be added only before commit")
    if not items:
        raise InvalidInput.for_field("items", "is empty", detail="no items given")
    limit = settings.BATCHSITE_MAX_ITEMS_PER_REQUEST
    if len(items) > limit:
        raise InvalidInput.for_field(
            "items",
            f"at most {limit} items per request",
            detail=f"{len(items)} items in one request; the limit is {limit}",
        )
    # The rows go to the database as they are checked, so on PostgreSQL the server stores
    # them while this process checks the rest. Once one item is refused nothing more is
    # written, and the refusal rolls back what was.
    start = batch.total_items
    problems: list[ItemProblem] = []
    types: set[str] = set()

    def rows() -> Iterator[tuple[int, str, str, str, str, str]]:
        for index, obj in enumerate(items):
            parsed = item_parse(obj, index=index, default_type=batch.type)
            if isinstance(parsed, ItemProblem):
                problems.append(parsed)
            elif not problems:
                types.add(parsed.type)
                yield (
                    start + index, parsed.external_id, parsed.key, parsed.type,
                    parsed.payload_json, "",
                )  # fmt: skip

    bulk.items_insert(batch_id=batch.pk, rows=rows())
    if problems:
        raise InvalidInput(
            f"{len(problems)} of {len(items)} items are invalid; nothing was added",
            errors=[error for problem in problems[:100] for error in problem.as_errors()],
        )
    _batch_room_check(batch=batch, adding=len(items), field="items")
    job_types_ready_check(types)
    created = range(start, start + len(items))
    updates = ["total_items", "pending_items"]
    updates += _item_types_note(batch, types)
    batch.total_items += len(created)
    batch.pending_items += len(created)
    if batch.status == Batch.Status.CREATED:
        batch.status = Batch.Status.OPEN
        updates.append("status")
    batch.save(update_fields=updates)
    event_record(batch=batch, kind="items_added", actor=actor, detail={"count": len(created)})
    return created


INSERT_GROUP = 5000


@transaction.atomic
def item_add_file(
    *,
    batch: Batch,
    upload: IO[bytes],
    name: str,
    size: int | None,
    actor: str,
    external_id: str = "",
    key: str = "",
    type: str | None = None,
    payload: dict[str, Any] | None = None,
) -> range:
    """Add one file item (a multipart upload); external_id and key default to its name."""
    batch = batch_lock(batch)
    if batch.status not in Batch.ACCEPTS_ITEMS:
        raise BatchNotOpen(f"batch is {batch.status}; items can be added only before commit")
    limit = settings.BATCHSITE_MAX_UPLOAD_BYTES
    if size is not None and size > limit:
        raise TooLarge(f"the file is {size} bytes; the limit is {limit}")
    record = {"external_id": external_id or name, "key": key or name, "payload": payload or {}}
    if type:
        record["type"] = type
    parsed = item_parse(record, index=0, default_type=batch.type)
    if isinstance(parsed, ItemProblem):
        raise InvalidInput("the item is invalid", errors=parsed.as_errors())
    job_type = get_job_type(parsed.type)
    assert job_type is not None, "item_parse accepts only registered job types"
    if not job_type.accepts_file:
        raise InvalidInput.for_field(
            "file",
            "this item's job type does not accept files",
            detail=f"job type {parsed.type!r} does not take files",
        )
    _batch_room_check(batch=batch, adding=1, field="file")
    job_types_ready_check([parsed.type])
    stored = files.upload_store(upload, f"{files.inputs_prefix(batch.pk)}/{uuid.uuid4().hex}")
    try:
        index = batch.total_items
        bulk.items_insert(
            batch_id=batch.pk,
            rows=[(index, parsed.external_id, parsed.key, parsed.type, parsed.payload_json,
                   stored)],
        )  # fmt: skip
        batch.total_items += 1
        batch.pending_items += 1
        updates = ["total_items", "pending_items", *_item_types_note(batch, [parsed.type])]
        if batch.status == Batch.Status.CREATED:
            batch.status = Batch.Status.OPEN
            updates.append("status")
        batch.save(update_fields=updates)
        event_record(batch=batch, kind="items_added", actor=actor, detail={"count": 1})
    except BaseException:
        files.files_delete([stored])
        raise
    return range(index, index + 1)


def batch_upload(
    *,
    batch: Batch,
    stream: staging.BinaryReader,
    content_type: str,
    content_length: int | None,
    actor: str,
    on_error: Literal["skip", "reject"] = "skip",
    dry_run: bool = False,
    csv_types: Literal["string", "infer"] = "string",
    payload: dict[str, Any] | None = None,
    regroup: staging.Regroup | None = None,
) -> dict[str, Any]:
    """Add the items of an uploaded JSONL, JSON array, CSV or ZIP file; return what was
    added and refused.

    An application/octet-stream body is read in the format its first bytes show. With
    on_error="skip" bad lines become BatchErrors and the good ones are added; with
    "reject" any bad line refuses the whole file. Either way the items are inserted in one
    transaction, and a dry run validates without adding anything. `regroup` is passed on
    to staging.stage.
    """
    fmt = formats.format_of(content_type or "")
    sniff = fmt is None and formats.media_type(content_type or "") == formats.OCTET_STREAM
    if fmt is None and not sniff:
        raise UnsupportedMediaType(
            f"cannot read {content_type or 'a body without a Content-Type'}; send "
            "application/x-ndjson, application/json (an array of items), text/csv or "
            f"application/zip, or {formats.OCTET_STREAM} to have the format read from the body"
        )
    if batch.status not in Batch.ACCEPTS_ITEMS:
        raise BatchNotOpen(f"batch is {batch.status}; items can be added only before commit")
    if fmt == "zip":
        # Every member becomes an item of the batch's type: refuse before reading the body.
        job_types_ready_check([batch.type])
    path = staging.receive(
        stream, content_length=content_length, limit=settings.BATCHSITE_MAX_UPLOAD_BYTES
    )
    try:
        if fmt is None:  # an octet-stream body (checked above): the body tells its format
            fmt = formats.format_sniff_file(path)
            if fmt is None:
                raise UnsupportedMediaType(
                    f"cannot tell the format of the {formats.OCTET_STREAM} body: it is none "
                    f"of {formats.SNIFFED_FORMATS}"
                )
        if payload is not None and fmt != "zip":
            raise InvalidInput.for_field(
                "payload",
                "only with application/zip",
                detail="a payload for every item goes with ZIP packages only; the other formats "
                "carry their own",
            )
        staged = staging.stage(
            path,
            fmt=fmt,
            default_type=batch.type,
            files_prefix=files.inputs_prefix(batch.pk),
            csv_types=csv_types,
            payload=payload,
            regroup=regroup,
        )
    except formats.FileRejected as exc:
        errors = exc.errors or [{"field": "file", "message": exc.message}]
        raise InvalidInput(exc.message, errors=errors) from exc
    finally:
        path.unlink(missing_ok=True)
    try:
        if on_error == "reject" and staged.rejected:
            raise InvalidInput(
                f"{staged.rejected} lines of the file are invalid; nothing was added",
                errors=staged.problems,
            )
        if dry_run:
            # items_add_staged checks readiness for a real upload.
            job_types_ready_check(staged.types)
            staged.discard()
        else:
            items_add_staged(batch=batch, staged=staged, actor=actor)
    except BaseException:
        staged.discard()
        raise
    staged.close()
    return staged.report(dry_run=dry_run)


@transaction.atomic
def items_add_staged(*, batch: Batch, staged: staging.Staged, actor: str) -> range:
    """Insert staged items and record the lines that were refused, in one transaction."""
    batch = batch_lock(batch)
    if batch.status not in (*Batch.ACCEPTS_ITEMS, Batch.Status.INGESTING):
        raise BatchNotOpen(f"batch is {batch.status}; items can be added only before commit")
    _batch_room_check(batch=batch, adding=staged.added, field="file")
    job_types_ready_check(staged.types)
    start = batch.total_items
    rows = ((start + offset, *staged_item) for offset, staged_item in enumerate(staged.items()))
    while group := list(itertools.islice(rows, INSERT_GROUP)):
        bulk.items_insert(batch_id=batch.pk, rows=group)
    errors = (
        BatchError(
            batch=batch,
            index=problem["index"],
            external_id=problem.get("external_id", ""),
            code=problem["code"],
            message=problem["message"],
        )
        for problem in staged.all_problems()
    )
    while error_group := list(itertools.islice(errors, INSERT_GROUP)):
        BatchError.objects.bulk_create(error_group)
    batch.total_items += staged.added
    batch.pending_items += staged.added
    batch.error_count += staged.rejected
    updates = ["total_items", "pending_items", "error_count"]
    updates += _item_types_note(batch, staged.types)
    if batch.status == Batch.Status.CREATED and staged.added:
        batch.status = Batch.Status.OPEN
        updates.append("status")
    batch.save(update_fields=updates)
    event_record(
        batch=batch,
        kind="items_uploaded",
        actor=actor,
        detail={"format": staged.format, "added": staged.added, "rejected": staged.rejected},
    )
    return range(start, start + staged.added)
