"""Create an API key for an account and print it once."""

from django.core.management.base import BaseCommand

from batches import services
from batches.management.operator import account_find


class Command(BaseCommand):
    help = (
        "Create an API key for ACCOUNT (its name or number). The raw key is printed as the "
        "last line and never again: only its hash is stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("account", help="account name or number")
        parser.add_argument("--name", default="default", help="a label for the key")

    def handle(self, *args, account, name, **options):
        found = account_find(account)
        key, raw = services.api_key_create(account=found, name=name)
        self.stderr.write(f"API key {key.prefix}… for account {found.name!r}; store it now:")
        self.stdout.write(raw)
