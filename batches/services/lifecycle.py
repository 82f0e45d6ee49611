"""Create batches and move them through their life: ingest, commit, pause, cancel, rerun.

Each transition runs in a transaction, re-fetches the batch under its row lock (batch_lock),
checks the current state, writes with update_fields or a conditional UPDATE, records a
BatchEvent, and queues work only in transaction.on_commit.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from batches import engine, files, selectors, tallies, webhooks
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
)
from batches.ingest import staging
from batches.models import Account, Batch, BatchError, Chunk, Item
from batches.services.common import batch_lock, job_types_ready_check, sequence_next
from batches.services.items import _items_insert, items_add_staged
from batches.timeline import event_record, items_move
from batchsite.requestid import request_id_get
from jobs import get_job_type, outbound

BATCH_OPTIONS = (
    "stop_on_error",
    "max_failures",
    "atomic",
    "not_before",
    "deadline",
    "retention_days",
    "callback_url",
    "webhook_events",
    "priority",
    "max_concurrency",
)


def _outbound_check(field: str, url: str) -> None:
    """Refuse, as invalid input on `field`, a URL the outbound guard would not fetch."""
    try:
        outbound.check_url(url)
    except outbound.OutboundRefused as exc:
        raise InvalidInput.for_field(field, str(exc), detail=f"{field} refused: {exc}") from exc


def _webhook_events_check(options: dict[str, Any]) -> None:
    """Refuse unknown webhook event names, each at its place, and events with nowhere to go."""
    events = options.get("webhook_events")
    if events is None:
        return
    field = "options.webhook_events"
    if not isinstance(events, list):
        raise InvalidInput.for_field(field, "must be a list of event names")
    known = ", ".join(Batch.WEBHOOK_EVENTS)
    errors = [
        {"field": f"{field}[{position}]", "message": f"unknown event {name!r}; one of {known}"}
        for position, name in enumerate(events)
        if name not in Batch.WEBHOOK_EVENTS
    ]
    if errors:
        raise InvalidInput(f"unknown webhook event(s); known: {known}", errors=errors)
    if events and not options.get("callback_url"):
        raise InvalidInput.for_field(
            field, "needs a callback_url", detail="webhook_events need a callback_url"
        )
    # Each once, in the order given.
    options["webhook_events"] = list(dict.fromkeys(events))


def _job_type_name(name: str | None) -> str:
    name = name or settings.BATCHSITE_DEFAULT_JOB_TYPE
    if get_job_type(name) is None:
        message = f"unknown job type {name!r}"
        raise InvalidInput.for_field("type", message, detail=message)
    return name


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
    options = dict(options or {})
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
    _webhook_events_check(options)
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
                request_id=request_id_get(),
                **options,
            )
            event_record(batch=batch, kind="created", actor=actor)
            webhooks.progress_subscribe(batch)
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
    tallies.tally_batch_end(batch_id=batch.pk)
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
    # A commit made for no request (a worker's, after ingest) keeps the creator's id.
    batch.request_id = request_id_get() or batch.request_id
    batch.save(update_fields=["status", "committed_at", "request_id"])
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


# What PATCH batches/{id}/ may change: nothing that changes what the items mean.
BATCH_CHANGES = ("label", "metadata", "priority", "max_concurrency", "deadline")


def _event_value(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


@transaction.atomic
def batch_change(*, batch: Batch, actor: str, changes: dict[str, Any]) -> Batch:
    """Change a live batch's label, metadata, priority, max_concurrency or deadline.

    Workers read these when they claim a chunk, so a change holds from the next chunk
    claimed; chunks in flight finish as they started. Raising or lifting max_concurrency
    releases the chunks it held. The event records each field's old and new value; a body
    that changes nothing records nothing.
    """
    unknown = sorted(set(changes) - set(BATCH_CHANGES))
    if unknown:
        raise InvalidInput(f"cannot change: {', '.join(unknown)}")
    batch = batch_lock(batch)
    if batch.status not in Batch.CHANGEABLE:
        raise BatchFinished(f"batch is {batch.status}; it can no longer be changed")
    changed = {name: value for name, value in changes.items() if getattr(batch, name) != value}
    deadline = changed.get("deadline")
    if deadline is not None and batch.not_before is not None and deadline <= batch.not_before:
        raise InvalidInput.for_field(
            "deadline",
            "Must be after the batch's not_before.",
            detail=f"deadline must be after not_before ({batch.not_before.isoformat()})",
        )
    if not changed:
        return batch
    detail = {
        name: {"from": _event_value(getattr(batch, name)), "to": _event_value(value)}
        for name, value in changed.items()
    }
    for name, value in changed.items():
        setattr(batch, name, value)
    batch.save(update_fields=list(changed))
    event_record(batch=batch, kind="changed", actor=actor, detail=detail)
    if "max_concurrency" in changed and batch.status in Batch.ACTIVE:
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
    # The reset items' outcomes stay counted in the batch's tallies; the kept ones are
    # counted from the items again while the batch is active.
    tallies.tally_batch_reopen(batch_id=batch.pk)
    # The items just queued: a refusal rolls their move back.
    job_types_ready_check(selectors.batch_item_types(batch=batch, statuses=[Item.Status.QUEUED]))
    stale = [files.outputs_prefix(batch.pk)] if which == "all" else []
    if settings.BATCHSITE_PACKAGE_REDIRECT:
        # A stored package is named after the finish time: the rerun's end makes a new one.
        stale.append(files.packages_prefix(batch.pk))
    if stale:
        transaction.on_commit(lambda: files.prefixes_delete(stale))
    Chunk.objects.filter(batch=batch).delete()
    batch.refresh_from_db()
    batch.status = Batch.Status.COMMITTED
    batch.ending = ""
    batch.committed_at = timezone.now()
    batch.started_at = None
    batch.finished_at = None
    batch.rate_from_at = batch.rate_mid_at = None
    batch.request_id = request_id_get() or batch.request_id
    batch.save(
        update_fields=[
            "status", "ending", "committed_at", "started_at", "finished_at",
            "rate_from_at", "rate_mid_at", "request_id",
        ]
    )  # fmt: skip
    chunk_ids = engine.chunks_plan(batch)
    event_record(batch=batch, kind="rerun", actor=actor, detail={"items": which, "count": moved})
    engine.chunks_enqueue_on_commit(batch, chunk_ids)
    return batch
