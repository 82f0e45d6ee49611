"""Helpers the operator commands share: finding a batch, watching it, printing it."""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta

from django.core.management.base import CommandError, OutputWrapper
from django.utils import timezone
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, JustifyMethod, RenderableType
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Column, Table
from rich.text import Text

from batches.models import Account, Batch, BatchError, Item
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


class Figures:
    """Short texts joined by " · ", broken into lines only between two of them.

    However narrow the terminal (80 columns is the one to fit), no figure is split or cut.
    """

    SEPARATOR = " · "

    def __init__(self, figures: Iterable[str]):
        self.figures = list(figures)

    def lines(self, width: int) -> list[str]:
        """Return the figures packed into lines of at most `width` cells where they fit."""
        lines: list[str] = []
        for figure in self.figures:
            joined = f"{lines[-1]}{self.SEPARATOR}{figure}" if lines else figure
            if lines and cell_len(joined) <= width:
                lines[-1] = joined
            else:
                lines.append(figure)
        return lines

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widest = max((cell_len(figure) for figure in self.figures), default=0)
        return Measurement(widest, cell_len(self.SEPARATOR.join(self.figures)))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        for line in self.lines(options.max_width):
            yield Text(line, no_wrap=True, overflow="ignore")


def _counts_figures(batch: Batch) -> list[str]:
    counts = batch.counts()
    return [
        f"{counts[Item.Status.SUCCEEDED]:,} ok",
        f"{counts[Item.Status.FAILED]:,} failed",
        f"{counts[Item.Status.CANCELLED]:,} cancelled",
    ]


def _live_figures(batch: Batch, measured_rate: float | None) -> list[str]:
    # The batch's own rate (a moving window the workers keep) first; rich's estimate from
    # what we saw move while watching when the batch has none yet.
    rate = batch.throughput or measured_rate
    remaining = batch.total_items - batch.ended_items
    eta = "-"
    if batch.is_terminal:
        eta = "done"
    elif rate and remaining > 0:
        eta = _duration(remaining / rate)
    return [
        *_counts_figures(batch),
        f"{rate:,.1f} items/s" if rate else "- items/s",
        f"ETA {eta}",
    ]


class _BatchProgress(Progress):
    """A batch's progress bar, with its counts, rate and ETA on the lines under it.

    Beside the bar they would squeeze it out of an 80-column terminal and cut numbers short.
    """

    def get_renderables(self) -> Iterator[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            yield Figures(task.fields["figures"])


def _progress(console: Console) -> Progress:
    """Return the live display of one batch: `batch N status ━━━━━━ done/total pct`."""

    def fixed() -> Column:
        return Column(no_wrap=True)

    return _BatchProgress(
        TextColumn("batch {task.fields[number]}", table_column=fixed()),
        TextColumn("{task.fields[status]:<10}", table_column=fixed()),
        BarColumn(bar_width=None),
        MofNCompleteColumn(table_column=fixed()),
        TaskProgressColumn(table_column=fixed()),
        console=console,
        refresh_per_second=4,
        expand=True,
    )


def batch_watch(batch: Batch, *, console: Console, interval: float) -> Batch:
    """Show a live progress bar of the batch until it ends; return the batch as it ended."""
    progress = _progress(console)
    with progress:
        task_id = progress.add_task(
            "", total=None, number=batch.number, status=batch.status, figures=[]
        )
        while True:
            _progress_show(progress, task_id, batch)
            if batch.is_terminal:
                break
            time.sleep(interval)
            fresh = Batch.objects.select_related("account").filter(pk=batch.pk).first()
            if fresh is None:
                raise CommandError(f"batch {batch.number} was deleted while being watched")
            batch = fresh
    return batch


def _progress_show(progress: Progress, task_id: TaskID, batch: Batch) -> None:
    """Show the batch as it is now on its task of the live display."""
    progress.update(
        task_id,
        total=batch.total_items or None,
        completed=batch.ended_items,
        status=batch.status,
        figures=_live_figures(batch, progress.tasks[0].speed),
    )


def batch_summary(batch: Batch) -> Group:
    """Return a rich renderable describing the batch: state, counters, rate, first errors."""
    return Group(_summary_grid(batch), *_error_lines(batch), *_failed_item_lines(batch))


def _summary_grid(batch: Batch) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
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
    counts = batch.counts()
    grid.add_row(
        "progress",
        f"{batch.progress:.1%}  ({batch.ended_items:,} of {batch.total_items:,} ended)",
    )
    grid.add_row("items", Figures(f"{count:,} {name}" for name, count in counts.items()))
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
    grid.add_row("errors", f"{batch.error_count:,}")
    if counts[Item.Status.FAILED]:
        grid.add_row("failed", f"{counts[Item.Status.FAILED]:,} items")
    return grid


def _error_lines(batch: Batch) -> list[str]:
    """Return the batch's first errors: lines that did not become items, batch failures."""
    lines = []
    for error in BatchError.objects.filter(batch_id=batch.pk).order_by("id")[:ERRORS_SHOWN]:
        where = "batch" if error.index is None else f"line {error.index}"
        if error.external_id:
            where += f" ({error.external_id})"
        lines.append(f"  {where}: {error.code}: {error.message}")
    return lines


def _failed_item_lines(batch: Batch) -> list[str]:
    """Return why the batch's first failed items failed, and how many more there are."""
    failed = batch.counts()[Item.Status.FAILED]
    if not failed:
        return []
    items = Item.objects.filter(batch_id=batch.pk, status=Item.Status.FAILED).order_by("index")
    lines = []
    for item in items.only("index", "external_id", "error_code", "error_message")[:ERRORS_SHOWN]:
        where = f"item {item.index}" + (f" ({item.external_id})" if item.external_id else "")
        lines.append(f"  {where} failed: {item.error_code}: {item.error_message}")
    if failed > len(lines):
        lines.append(f"  … and {failed - len(lines):,} more failed items")
    return lines


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
