"""Helpers the operator commands share: finding a batch, watching it, printing it."""

from __future__ import annotations

import getpass
import time
from datetime import timedelta
from typing import TypedDict

from django.core.management.base import CommandError, OutputWrapper
from django.utils import timezone
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Table

from batches.models import Account, Batch, BatchError
from batches.selectors import account_get_by_reference, batch_get_by_reference, batch_lookup

RECENT_DEFAULT = 20
ERRORS_SHOWN = 5
# Wide enough for a UUID column when the output goes to a file or a pipe.
PIPE_WIDTH = 160


def command_actor() -> str:
    """Name who runs the command, for the batch timeline."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}"


def batch_find(reference: str) -> Batch:
    """Return the batch a UUID or a batch number names; CommandError if there is none."""
    reference = reference.strip()
    if batch_lookup(reference) is None:
        raise CommandError(f"{reference!r} is neither a batch id (a UUID) nor a batch number")
    found = batch_get_by_reference(reference=reference)
    if found is None:
        raise CommandError(f"no batch {reference}; run batchstatus without an ID to list batches")
    return found


def account_find(reference: str) -> Account:
    """Return the account a name or number names; CommandError if there is none."""
    found = account_get_by_reference(reference=reference)
    if found is None:
        raise CommandError(f"no account named or numbered {reference!r}; see createaccount")
    return found


class _WrapperFile:
    """A file for rich that writes through a command's OutputWrapper as is.

    OutputWrapper ends every write with a newline, which would break rich's live display.
    """

    def __init__(self, wrapper: OutputWrapper):
        self.wrapper = wrapper

    def write(self, text: str) -> int:
        self.wrapper.write(text, ending="")
        return len(text)

    def flush(self) -> None:
        self.wrapper.flush()

    def isatty(self) -> bool:
        return self.wrapper.isatty()


def console_for(wrapper: OutputWrapper) -> Console:
    """Return a rich console writing to a command's stdout or stderr."""
    file = _WrapperFile(wrapper)
    # rich annotates `file` as IO[str] but only calls write, flush and isatty on it.
    return Console(
        file=file,  # type: ignore[arg-type]
        width=None if file.isatty() else PIPE_WIDTH,
        highlight=False,
    )


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def _counts_text(batch: Batch) -> str:
    return (
        f"{batch.succeeded_items} ok · {batch.failed_items} failed · "
        f"{batch.cancelled_items} cancelled"
    )


class _LiveFields(TypedDict):
    number: str
    status: str
    counts: str
    rate: str
    eta: str


def _live_fields(batch: Batch, measured_rate: float | None) -> _LiveFields:
    # The batch's own rate (a moving window the workers keep) first; rich's estimate from
    # what we saw move while watching when the batch has none yet.
    rate = batch.throughput or measured_rate
    remaining = batch.total_items - batch.ended_items
    eta = "-"
    if batch.is_terminal:
        eta = "done"
    elif rate and remaining > 0:
        eta = _duration(remaining / rate)
    return {
        "number": str(batch.number),
        "status": batch.status,
        "counts": _counts_text(batch),
        "rate": f"{rate:,.1f} items/s" if rate else "- items/s",
        "eta": eta,
    }


def batch_watch(batch: Batch, *, console: Console, interval: float) -> Batch:
    """Show a live progress bar of the batch until it ends; return the batch as it ended."""
    progress = Progress(
        TextColumn("batch {task.fields[number]}"),
        TextColumn("{task.fields[status]:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
        console=console,
        refresh_per_second=4,
    )
    with progress:
        task_id = progress.add_task("", total=None, **_live_fields(batch, None))
        while True:
            progress.update(
                task_id,
                total=batch.total_items or None,
                completed=batch.ended_items,
                **_live_fields(batch, progress.tasks[0].speed),
            )
            if batch.is_terminal:
                break
            time.sleep(interval)
            fresh = Batch.objects.select_related("account").filter(pk=batch.pk).first()
            if fresh is None:
                raise CommandError(f"batch {batch.number} was deleted while being watched")
            batch = fresh
    return batch


def batch_summary(batch: Batch) -> Group:
    """Return a rich renderable describing the batch: state, counters, rate, first errors."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("batch", f"{batch.number}  ({batch.pk})")
    grid.add_row("account", batch.account.name)
    grid.add_row("type", batch.type)
    if batch.label:
        grid.add_row("label", batch.label)
    status = batch.status
    if batch.status == Batch.Status.CANCELLING and batch.ending:
        status = f"{status} (ending {batch.ending})"
    grid.add_row("status", status)
    grid.add_row(
        "progress", f"{batch.progress:.1%}  ({batch.ended_items} of {batch.total_items} ended)"
    )
    grid.add_row(
        "items",
        " · ".join(f"{count} {name}" for name, count in batch.counts().items()),
    )
    rate = batch.throughput
    grid.add_row("rate", f"{rate:,.1f} items/s" if rate else "-")
    eta = batch.estimated_completion()
    if eta:
        grid.add_row("ETA", f"{timezone.localtime(eta):%Y-%m-%d %H:%M:%S}")
    for label, value in (
        ("created", batch.created_at),
        ("committed", batch.committed_at),
        ("started", batch.started_at),
        ("finished", batch.finished_at),
    ):
        if value:
            grid.add_row(label, f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S}")
    if batch.started_at and batch.finished_at:
        grid.add_row("took", _duration((batch.finished_at - batch.started_at).total_seconds()))
    grid.add_row("errors", str(batch.error_count))
    parts: list[RenderableType] = [grid]
    errors = BatchError.objects.filter(batch_id=batch.pk).order_by("id")[:ERRORS_SHOWN]
    for error in errors:
        where = "batch" if error.index is None else f"line {error.index}"
        if error.external_id:
            where += f" ({error.external_id})"
        parts.append(f"  {where}: {error.code}: {error.message}")
    return Group(*parts)


def batches_table(batches: list[Batch]) -> Table:
    """Return a rich table of batches, one row each."""
    table = Table(title="recent batches")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("number", "right"),
        ("id", "left"),
        ("account", "left"),
        ("type", "left"),
        ("label", "left"),
        ("status", "left"),
        ("progress", "right"),
        ("items", "right"),
        ("ok", "right"),
        ("failed", "right"),
        ("created", "left"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name in ("id", "number", "status"))
    for batch in batches:
        table.add_row(
            str(batch.number),
            str(batch.pk),
            batch.account.name,
            batch.type,
            batch.label,
            batch.status,
            f"{batch.progress:.0%}",
            str(batch.total_items),
            str(batch.succeeded_items),
            str(batch.failed_items),
            f"{timezone.localtime(batch.created_at):%Y-%m-%d %H:%M}",
        )
    return table
