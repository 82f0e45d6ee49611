"""Every state change of accounts, keys, batches and items: one function per transition.

Each transition runs in a transaction, re-fetches the batch with select_for_update,
checks the current state, writes with update_fields or a conditional UPDATE, records a
BatchEvent, and queues work only in transaction.on_commit.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from batches import engine, selectors, webhooks
from batches.engine import nudges
from batches.exceptions import (
    BatchAlreadyCommitted,
    BatchEmpty,
    BatchExists,
    BatchFinished,
    BatchNotCommitted,
    BatchNotFinished,
    BatchNotOpen,
    Conflict,
    InvalidInput,
    JobTypeNotReady,
    NotFound,
    TooLarge,
    UnsupportedMediaType,
)
from batches.ingest import bulk, formats, staging
from batches.ingest.items import ItemProblem, ItemSpec, item_parse, items_parse
from batches.models import Account, ApiKey, Batch, BatchError, Chunk, Item, Sequence
from batches.timeline import event_record, items_move
from jobs import get_job_type, outbound

logger = logging.getLogger(__name__)


def sequence_next(name: str) -> int:
    """Return the next number of the named sequence; call inside a transaction."""
    Sequence.objects.get_or_create(name=name)
    Sequence.objects.filter(name=name).update(last=F("last") + 1)
    return Sequence.objects.values_list("last", flat=True).get(name=name)


def batch_lock(batch: Batch | Any) -> Batch:
    """Re-fetch the batch with a row lock; NotFound if it was deleted meanwhile."""
    pk = batch.pk if isinstance(batch, Batch) else batch
    locked = Batch.objects.select_for_update().filter(pk=pk).first()
    if locked is None:
        raise NotFound("batch not found")
    return locked


def batch_files_dir(batch_id: uuid.UUID | str) -> Path:
    """Return the folder holding a batch's input and output files."""
    return Path(settings.MEDIA_ROOT) / "batches" / str(batch_id)


# --- accounts and keys --------------------------------------------------------------------------


@transaction.atomic
def account_create(*, name: str) -> Account:
    """Create a tenant account with the next account number."""
    name = name.strip()
    if not name:
        raise InvalidInput("an account needs a name")
    if Account.objects.filter(name=name).exists():
        raise Conflict(f"an account named {name!r} exists already", code="account_exists")
    return Account.objects.create(name=name, number=sequence_next("account"))


def api_key_create(*, account: Account, name: str = "default") -> tuple[ApiKey, str]:
    """Create an API key for the account; return it and the raw key, which is never stored."""
    key, raw = ApiKey.objects.create_key(account=account, name=name[:50] or "default")
    # The library's manager is typed for AbstractAPIKey; ApiKey's manager makes ApiKeys.
    return cast(ApiKey, key), raw


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key; requests made with it fail from now on."""
    key.revoked = True
    key.save(update_fields=["revoked"])
    return key


# --- batches -------------------------------------------------------------------------------------

BATCH_OPTIONS = (
    "stop_on_error",
    "max_failures",
    "atomic",
    "not_before",
    "deadline",
    "retention_days",
    "callback_url",
    "priority",
    "max_concurrency",
)


def _outbound_check(field: str, url: str) -> None:
    """Refuse, as invalid input on `field`, a URL the outbound guard would not fetch."""
    try:
        outbound.check_url(url)
    except outbound.OutboundRefused as exc:
        raise InvalidInput.for_field(field, str(exc), detail=f"{field} refused: {exc}") from exc


def _job_type_name(name: str | None) -> str:
    name = name or settings.BATCHSITE_DEFAULT_JOB_TYPE
    if get_job_type(name) is None:
        message = f"unknown job type {name!r}"
        raise InvalidInput.for_field("type", message, detail=message)
    return name


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


def _item_types_note(batch: Batch, types: Iterable[str]) -> list[str]:
    """Mark the locked batch mixed if `types` hold another type than its own.

    Returns the field to save with the batch's other changes, if it changed.
    """
    if batch.item_types_mixed or all(name == batch.type for name in types):
        return []
    batch.item_types_mixed = True
    return ["item_types_mixed"]


def batch_create(
    *,
    account: Account,
    actor: str,
    id: uuid.UUID | None = None,
    type: str | None = None,
    label: str = "",
    metadata: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    items: list[Any] | None = None,
    source_url: str = "",
    commit: bool = False,
) -> tuple[Batch, bool]:
    """Create a batch, optionally with items and committed; return it and whether it is new.

    The same client-chosen id from the same account returns the existing batch unchanged;
    an id another account holds is a conflict. With a source_url the batch is `ingesting`
    until a worker has downloaded and read the file (and committed it, if asked).
    """
    if id is not None:
        existing = Batch.objects.filter(pk=id).first()
        if existing is not None:
            return _existing_batch(existing, account), False
    type = _job_type_name(type)
    options = options or {}
    unknown = sorted(set(options) - set(BATCH_OPTIONS))
    if unknown:
        raise InvalidInput(f"unknown option(s): {', '.join(unknown)}")
    if source_url:
        if items:
            raise InvalidInput.for_field(
                "source_url",
                "cannot be combined with items",
                detail="give items or a source_url, not both",
            )
        _outbound_check("source_url", source_url)
        # The file's items are checked once read; most take the batch's type, so a type
        # that cannot run is refused now rather than after the download.
        job_types_ready_check([type])
    if options.get("callback_url"):
        _outbound_check("callback_url", options["callback_url"])
    try:
        with transaction.atomic():
            batch = Batch.objects.create(
                id=id or uuid.uuid4(),
                number=sequence_next("batch"),
                account=account,
                type=type,
                label=label,
                metadata=metadata or {},
                source_url=source_url,
                commit_on_ingest=bool(source_url and commit),
                status=Batch.Status.INGESTING if source_url else Batch.Status.CREATED,
                **options,
            )
            event_record(batch=batch, kind="created", actor=actor)
            if source_url:
                transaction.on_commit(lambda: engine.ingest_enqueue(batch.pk))
                return batch, True
            if items:
                _items_insert(batch=batch, items=items, actor=actor)
            if commit:
                batch = batch_commit(batch=batch, actor=actor)
    except IntegrityError:
        # Two requests raced to create the same id; the loser returns the winner's batch.
        existing = Batch.objects.filter(pk=id).first() if id is not None else None
        if existing is None:
            raise
        return _existing_batch(existing, account), False
    return batch, True


def _existing_batch(batch: Batch, account: Account) -> Batch:
    if batch.account_id != account.pk:
        raise BatchExists(f"batch id {batch.pk} is taken")
    return batch


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
    specs, problems = items_parse(items, default_type=batch.type)
    if problems:
        raise InvalidInput(
            f"{len(problems)} of {len(items)} items are invalid; nothing was added",
            errors=[problem.as_dict() for problem in problems[:100]],
        )
    _batch_room_check(batch=batch, adding=len(specs), field="items")
    job_types_ready_check(spec.type for spec in specs)
    created = _items_bulk_create(batch=batch, specs=specs)
    updates = ["total_items", "pending_items"]
    updates += _item_types_note(batch, (spec.type for spec in specs))
    batch.total_items += len(created)
    batch.pending_items += len(created)
    if batch.status == Batch.Status.CREATED:
        batch.status = Batch.Status.OPEN
        updates.append("status")
    batch.save(update_fields=updates)
    event_record(batch=batch, kind="items_added", actor=actor, detail={"count": len(created)})
    return created


def _items_bulk_create(*, batch: Batch, specs: list[ItemSpec]) -> range:
    start = batch.total_items
    bulk.items_insert(
        batch_id=batch.pk,
        rows=(
            (start + offset, spec.external_id, spec.key, spec.type, spec.payload_json, "")
            for offset, spec in enumerate(specs)
        ),
    )
    return range(start, start + len(specs))


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
        raise InvalidInput("the item is invalid", errors=[parsed.as_dict()])
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
    target = batch_files_dir(batch.pk) / "in" / uuid.uuid4().hex
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "wb") as out:
            shutil.copyfileobj(upload, out)
        index = batch.total_items
        bulk.items_insert(
            batch_id=batch.pk,
            rows=[(index, parsed.external_id, parsed.key, parsed.type, parsed.payload_json,
                   str(target.relative_to(settings.MEDIA_ROOT)))],
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
        target.unlink(missing_ok=True)
        raise
    return range(index, index + 1)


def batch_upload(
    *,
    batch: Batch,
    stream: IO[bytes],
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
            files_dir=batch_files_dir(batch.pk) / "in",
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


@transaction.atomic
def batch_ingest_finish(*, batch: Batch, staged: staging.Staged, actor: str) -> Batch | None:
    """Add what was read from the batch's source and open it (or commit it, if asked).

    Returns None if the batch is no longer ingesting (another delivery of the task got
    there first, or the batch was cancelled): the staged items are then not added.
    """
    batch = batch_lock(batch)
    if batch.status != Batch.Status.INGESTING:
        return None
    try:
        items_add_staged(batch=batch, staged=staged, actor=actor)
    except JobTypeNotReady as exc:
        # Nobody waits on this request: the batch fails, saying what to fix.
        return batch_fail(batch=batch, code=exc.code, message=exc.message, actor=actor)
    batch.refresh_from_db()
    if not staged.added:
        return batch_fail(
            batch=batch, code="source_empty", message="the source holds no valid item", actor=actor
        )
    batch.status = Batch.Status.OPEN
    batch.save(update_fields=["status"])
    event_record(batch=batch, kind="ingested", actor=actor, detail={"added": staged.added})
    if batch.commit_on_ingest:
        batch = batch_commit(batch=batch, actor=actor)
    return batch


@transaction.atomic
def batch_fail(*, batch: Batch, code: str, message: str, actor: str) -> Batch:
    """End a batch that cannot go on (its source is unreadable) as `failed`, saying why."""
    batch = batch_lock(batch)
    if batch.status in Batch.TERMINAL:
        return batch
    if batch.status in Batch.ACTIVE:
        raise BatchNotFinished("a running batch fails through its items, not as a whole")
    BatchError.objects.create(batch=batch, code=code, message=message)
    Batch.objects.filter(pk=batch.pk).update(error_count=F("error_count") + 1)
    return _uncommitted_end(
        batch=batch,
        status=Batch.Status.FAILED,
        actor=actor,
        detail={"code": code, "message": message},
    )


UNCOMMITTED = (Batch.Status.CREATED, Batch.Status.OPEN, Batch.Status.INGESTING)


def _uncommitted_end(
    *, batch: Batch, status: str, actor: str, detail: dict[str, Any] | None = None
) -> Batch:
    """End a locked batch that was never committed: its items are cancelled."""
    now = timezone.now()
    items_move(
        batch_id=batch.pk,
        from_statuses=[Item.Status.PENDING],
        to_status=Item.Status.CANCELLED,
        finished_at=now,
    )
    batch.refresh_from_db()
    batch.status = status
    batch.finished_at = now
    batch.save(update_fields=["status", "finished_at"])
    event_record(batch=batch, kind=status, actor=actor, detail=detail)
    webhooks.batch_ended(batch)
    return batch


@transaction.atomic
def batch_commit(*, batch: Batch, actor: str) -> Batch:
    """Close the batch to new items and queue its chunks."""
    batch = batch_lock(batch)
    if batch.status == Batch.Status.CREATED:
        raise BatchEmpty("batch has no items; add items before committing")
    if batch.committed_at is not None:
        raise BatchAlreadyCommitted(f"batch was committed already; it is {batch.status}")
    if batch.status in Batch.TERMINAL:
        raise BatchFinished(f"batch is {batch.status}; it can no longer be committed")
    if batch.status != Batch.Status.OPEN:
        raise BatchNotOpen(f"batch is {batch.status}; it cannot be committed yet")
    # Checked again: a signing key or a mail setting may have gone since the items came.
    job_types_ready_check(selectors.batch_item_types(batch=batch))
    items_move(batch_id=batch.pk, from_statuses=[Item.Status.PENDING], to_status=Item.Status.QUEUED)
    batch.refresh_from_db()
    batch.status = Batch.Status.COMMITTED
    batch.committed_at = timezone.now()
    batch.save(update_fields=["status", "committed_at"])
    chunk_ids = engine.chunks_plan(batch)
    event_record(batch=batch, kind="committed", actor=actor, detail={"chunks": len(chunk_ids)})
    engine.chunks_enqueue_on_commit(batch, chunk_ids)
    return batch


@transaction.atomic
def batch_cancel(*, batch: Batch, actor: str) -> Batch:
    """Stop the batch: unstarted items are cancelled; finished items keep their results."""
    batch = batch_lock(batch)
    if batch.status in Batch.TERMINAL or batch.status == Batch.Status.FINALIZING:
        raise BatchFinished(f"batch is {batch.status}; there is nothing left to cancel")
    if batch.status == Batch.Status.CANCELLING:
        return batch
    if batch.status in UNCOMMITTED:
        return _uncommitted_end(batch=batch, status=Batch.Status.CANCELLED, actor=actor)
    engine.batch_wind_down(batch=batch, ending=Batch.Status.CANCELLED, actor=actor)
    batch.refresh_from_db()
    return batch


@transaction.atomic
def batch_expire(*, batch: Batch, actor: str, reason: str) -> Batch:
    """End a batch that ran out of time: its TTL before commit, or its deadline.

    Unfinished items are cancelled; items that ended keep their outcome.
    """
    batch = batch_lock(batch)
    if batch.status in Batch.TERMINAL or batch.status in (
        Batch.Status.CANCELLING,
        Batch.Status.FINALIZING,
    ):
        return batch
    if batch.status in UNCOMMITTED:
        return _uncommitted_end(
            batch=batch, status=Batch.Status.EXPIRED, actor=actor, detail={"reason": reason}
        )
    engine.batch_wind_down(batch=batch, ending=Batch.Status.EXPIRED, actor=actor, reason=reason)
    batch.refresh_from_db()
    return batch


@transaction.atomic
def batch_pause(*, batch: Batch, actor: str) -> Batch:
    """Stop the batch's workers before their next item and hold its chunks until a resume.

    Workers that hold a chunk write what they finished and give the chunk back, held.

    Pausing a paused batch changes nothing. Deadlines still apply while paused.
    """
    batch = batch_lock(batch)
    if batch.status in UNCOMMITTED:
        raise BatchNotCommitted(f"batch is {batch.status}; commit it before pausing it")
    if batch.status not in (Batch.Status.COMMITTED, Batch.Status.RUNNING):
        raise BatchFinished(f"batch is {batch.status}; there is nothing left to pause")
    if batch.paused_at is None:
        batch.paused_at = timezone.now()
        batch.save(update_fields=["paused_at"])
        nudges.batch_nudge(batch.pk)
        event_record(batch=batch, kind="paused", actor=actor)
    return batch


@transaction.atomic
def batch_resume(*, batch: Batch, actor: str) -> Batch:
    """Let workers claim the paused batch's chunks again; resuming a running batch is a no-op."""
    batch = batch_lock(batch)
    if batch.status in UNCOMMITTED:
        raise BatchNotCommitted(f"batch is {batch.status}; only a committed batch can resume")
    if batch.paused_at is None:
        if batch.status in Batch.TERMINAL:
            raise BatchFinished(f"batch is {batch.status}; there is nothing left to resume")
        return batch
    batch.paused_at = None
    batch.save(update_fields=["paused_at"])
    event_record(batch=batch, kind="resumed", actor=actor)
    batch_id = batch.pk
    transaction.on_commit(lambda: engine.chunks_release(batch_id))
    return batch


RerunWhich = Literal["failed", "all"]


@transaction.atomic
def batch_rerun(*, batch: Batch, which: RerunWhich, actor: str) -> Batch:
    """Queue a terminal batch's failed items (or all of them) again and commit it anew.

    In an atomic batch nothing but all-or-none makes sense, so "failed" also takes the
    items whose results were discarded.
    """
    batch = batch_lock(batch)
    if batch.status not in Batch.TERMINAL:
        raise BatchNotFinished(f"batch is {batch.status}; only an ended batch can be rerun")
    if which == "all":
        statuses = list(Item.ENDED)
    elif batch.atomic:
        statuses = [Item.Status.FAILED, Item.Status.CANCELLED]
    else:
        statuses = [Item.Status.FAILED]
    moved = items_move(
        batch_id=batch.pk,
        from_statuses=statuses,
        to_status=Item.Status.QUEUED,
        result=None,
        output_files=[],
        error_code="",
        error_message="",
        attempts=0,
        seq=None,
        started_at=None,
        finished_at=None,
    )
    if not moved:
        raise Conflict(f"batch has no {which} items to rerun", code="nothing_to_rerun")
    # The items just queued: a refusal rolls their move back.
    job_types_ready_check(selectors.batch_item_types(batch=batch, statuses=[Item.Status.QUEUED]))
    if which == "all":
        outputs = engine.batch_outputs_dir(batch.pk)
        transaction.on_commit(lambda: shutil.rmtree(outputs, ignore_errors=True))
    Chunk.objects.filter(batch=batch).delete()
    batch.refresh_from_db()
    batch.status = Batch.Status.COMMITTED
    batch.ending = ""
    batch.committed_at = timezone.now()
    batch.started_at = None
    batch.finished_at = None
    batch.rate_from_at = batch.rate_mid_at = None
    batch.save(
        update_fields=[
            "status", "ending", "committed_at", "started_at", "finished_at",
            "rate_from_at", "rate_mid_at",
        ]
    )  # fmt: skip
    chunk_ids = engine.chunks_plan(batch)
    event_record(batch=batch, kind="rerun", actor=actor, detail={"items": which, "count": moved})
    engine.chunks_enqueue_on_commit(batch, chunk_ids)
    return batch


@transaction.atomic
def batch_delete(*, batch: Batch, actor: str) -> None:
    """Remove the batch with its items, errors, events and files; later reads are 404."""
    batch = batch_lock(batch)
    batch_id = batch.pk
    # Errors, then items, each in one statement, so Django never collects item rows.
    BatchError.objects.filter(batch_id=batch_id).delete()
    Item.objects.filter(batch_id=batch_id).delete()
    batch.delete()
    nudges.batch_nudge(batch_id)
    logger.info("batch %s deleted by %s", batch_id, actor)
    transaction.on_commit(lambda: nudges.nudges_clear(batch_id))
    transaction.on_commit(lambda: shutil.rmtree(batch_files_dir(batch_id), ignore_errors=True))


def _retention_over(batch: Batch, now: datetime) -> bool:
    """Return True when an ended batch has been kept as long as its retention says.

    Its own `retention_days`, else BATCHSITE_RETENTION_DAYS; a retention longer than the
    API takes (set in the admin) keeps it for good.
    """
    if not batch.is_terminal or batch.finished_at is None:
        return False
    days = batch.retention_days
    if days is None:
        days = settings.BATCHSITE_RETENTION_DAYS
    if days > Batch.MAX_RETENTION_DAYS:
        return False
    return batch.finished_at < now - timedelta(days=days)


@transaction.atomic
def batch_purge(
    *,
    batch: Batch,
    actor: str,
    finished_before: datetime | None = None,
    retention_at: datetime | None = None,
) -> bool:
    """Delete an ended batch that is still due; return whether it was deleted.

    Due means ended, and also finished before `finished_before` and past its retention at
    `retention_at` when they are given. Whoever listed the batch did so without a lock, so
    it is checked again under its row lock: a batch rerun, given a longer retention or
    deleted since is kept.
    """
    locked = Batch.objects.select_for_update().filter(pk=batch.pk).first()
    if locked is None or not locked.is_terminal:
        return False
    if finished_before is not None and not (
        locked.finished_at and locked.finished_at < finished_before
    ):
        return False
    if retention_at is not None and not _retention_over(locked, retention_at):
        return False
    batch_delete(batch=locked, actor=actor)
    return True


def batches_purge_older(*, older_than: timedelta, dry_run: bool, actor: str) -> list[Batch]:
    """Delete ended batches that finished more than `older_than` ago; return them.

    A dry run only returns what would be deleted.
    """
    cutoff = timezone.now() - older_than
    due = list(
        Batch.objects.filter(status__in=Batch.TERMINAL, finished_at__lt=cutoff)
        .select_related("account")
        .order_by("finished_at", "number")
    )
    if dry_run:
        return due
    return [batch for batch in due if batch_purge(batch=batch, actor=actor, finished_before=cutoff)]
