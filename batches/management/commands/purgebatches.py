"""Delete ended batches that finished before a cutoff."""

import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from batches import services
from batches.management.operator import command_actor

DURATION = re.compile(r"(\d+)([dhm])")
UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def duration_parse(text: str) -> timedelta:
    """Turn `30d`, `12h` or `90m` into a timedelta; CommandError otherwise."""
    match = DURATION.fullmatch(text.strip().lower())
    if not match or int(match[1]) == 0:
        raise CommandError(
            f"--older-than {text!r} is not a duration; give a positive number of days, hours "
            "or minutes, e.g. 30d, 12h or 90m"
        )
    return timedelta(**{UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = (
        "Delete ended batches (finished, stopped, cancelled, failed, expired) that finished "
        "more than --older-than ago, with their items, errors and files. --dry-run only lists "
        "them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h or 90m"
        )
        parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")

    def handle(self, *args, older_than, dry_run, **options):
        age = duration_parse(older_than)
        cutoff = timezone.localtime(timezone.now() - age)
        batches = services.batches_purge_older(
            older_than=age, dry_run=dry_run, actor=command_actor()
        )
        verb = "would purge" if dry_run else "purged"
        for batch in batches:
            self.stdout.write(
                f"{verb} batch {batch.number} ({batch.pk}): {batch.status}, "
                f"finished {timezone.localtime(batch.finished_at):%Y-%m-%d %H:%M}, "
                f"{batch.total_items} items, account {batch.account.name}"
            )
        noun = "batch" if len(batches) == 1 else "batches"
        self.stdout.write(f"{verb} {len(batches)} {noun} that ended before {cutoff:%Y-%m-%d %H:%M}")
