"""Run an ended batch's failed items, or all of its items, again."""

from django.core.management.base import BaseCommand, CommandError

from batches import services
from batches.exceptions import DomainError
from batches.management.operator import batch_find, command_actor


class Command(BaseCommand):
    help = (
        "Queue the failed items of ended batch ID (its UUID or number) again and commit it "
        "anew; --all reruns every item and drops the earlier results and output files."
    )

    def add_arguments(self, parser):
        parser.add_argument("batch", metavar="ID", help="batch UUID or number")
        parser.add_argument("--all", action="store_true", help="rerun every item, not only failed")

    def handle(self, *args, batch, **options):
        which: services.RerunWhich = "all" if options["all"] else "failed"
        found = batch_find(batch)
        try:
            found = services.batch_rerun(batch=found, which=which, actor=command_actor())
        except DomainError as exc:
            raise CommandError(f"cannot rerun batch {found.number}: {exc.message}") from exc
        queued = found.queued_items
        self.stdout.write(
            f"batch {found.number} is {found.status}: "
            f"{queued} item{'' if queued == 1 else 's'} queued again"
        )
