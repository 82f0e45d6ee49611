"""Cancel a batch."""

from django.core.management.base import BaseCommand, CommandError

from batches import services
from batches.exceptions import DomainError
from batches.management.operator import batch_find, command_actor
from batches.models import Batch


class Command(BaseCommand):
    help = (
        "Cancel batch ID (its UUID or number): items not started are cancelled, ended items "
        "keep their results; a running batch stops after the items in progress."
    )

    def add_arguments(self, parser):
        parser.add_argument("batch", metavar="ID", help="batch UUID or number")

    def handle(self, *args, batch, **options):
        found = batch_find(batch)
        try:
            found = services.batch_cancel(batch=found, actor=command_actor())
        except DomainError as exc:
            raise CommandError(f"cannot cancel batch {found.number}: {exc.message}") from exc
        if found.status == Batch.Status.CANCELLING:
            self.stdout.write(
                f"batch {found.number} is cancelling: workers stop after their current items"
            )
        else:
            self.stdout.write(
                f"batch {found.number} is {found.status}: "
                f"{found.cancelled_items} items cancelled, {found.succeeded_items} succeeded, "
                f"{found.failed_items} failed"
            )
