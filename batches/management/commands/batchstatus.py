"""Show one batch's progress, live until it ends with --watch, or a table of recent batches."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from batches.management.operator import (
    RECENT_DEFAULT,
    batch_find,
    batch_summary,
    batch_watch,
    batches_table,
    console_for,
)
from batches.models import Batch


class Command(BaseCommand):
    help = (
        "Show batch ID (its UUID or number): state, counters, rate and ETA; with --watch, a "
        "live progress bar until the batch ends. Without ID, list the most recent batches."
    )

    def add_arguments(self, parser):
        parser.add_argument("batch", nargs="?", metavar="ID", help="batch UUID or number")
        parser.add_argument(
            "--watch", action="store_true", help="show a progress bar until the batch ends"
        )
        parser.add_argument(
            "--interval", type=float, default=1.0, help="seconds between polls (default 1)"
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=RECENT_DEFAULT,
            help=f"batches listed without ID (default {RECENT_DEFAULT})",
        )

    def handle(self, *args, batch, watch, interval, limit, **options):
        console = console_for(self.stdout)
        if batch is None:
            if watch:
                raise CommandError("--watch needs a batch ID")
            if limit < 1:
                raise CommandError("--limit must be at least 1")
            recent = list(Batch.objects.select_related("account").order_by("-number")[:limit])
            if not recent:
                self.stdout.write("no batches yet")
                return
            console.print(batches_table(recent))
            return
        if interval <= 0:
            raise CommandError("--interval must be more than 0 seconds")
        found = batch_find(batch)
        if watch:
            try:
                found = batch_watch(found, console=console, interval=interval)
            except KeyboardInterrupt:
                raise CommandError(
                    f"stopped watching; batch {found.number} goes on", returncode=130
                ) from None
        console.print(batch_summary(found))
