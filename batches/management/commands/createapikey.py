"""Create an API key for an account and print it once."""

from django.core.management.base import BaseCommand, CommandError

from batches import services
from batches.models import Account


class Command(BaseCommand):
    help = (
        "Create an API key for ACCOUNT (its name or number). The raw key is printed as the "
        "last line and never again: only its hash is stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("account", help="account name or number")
        parser.add_argument("--name", default="default", help="a label for the key")

    def handle(self, *args, account, name, **options):
        found = Account.objects.filter(name=account).first()
        if found is None and account.isdigit():
            found = Account.objects.filter(number=int(account)).first()
        if found is None:
            raise CommandError(f"no account named or numbered {account!r}; see createaccount")
        key, raw = services.api_key_create(account=found, name=name)
        self.stderr.write(f"API key {key.prefix}… for account {found.name!r}; store it now:")
        self.stdout.write(raw)
