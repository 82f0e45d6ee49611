"""Create a tenant account."""

from django.core.management.base import BaseCommand, CommandError

from batches import services
from batches.exceptions import DomainError


class Command(BaseCommand):
    help = "Create an account (a tenant whose API keys see only its own batches)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="unique account name")

    def handle(self, *args, name, **options):
        try:
            account = services.account_create(name=name)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"created account {account.name!r} with number {account.number}")
