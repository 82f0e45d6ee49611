"""Give an account a new webhook secret and print it once."""

from django.conf import settings
from django.core.management.base import BaseCommand

from batches import webhooks
from batches.management.operator import account_find


class Command(BaseCommand):
    help = (
        "Make a new webhook secret for ACCOUNT (its name or number). The secret is printed "
        "as the last line and never again. The previous secret keeps signing deliveries "
        "(a second signature in webhook-signature) for BATCHSITE_WEBHOOK_SECRET_OVERLAP_SECONDS."
    )

    def add_arguments(self, parser):
        parser.add_argument("account", help="account name or number")

    def handle(self, *args, account, **options):
        found = account_find(account)
        had_secret = bool(found.webhook_secret)
        secret = webhooks.webhook_secret_rotate(account=found)
        if had_secret:
            hours = settings.BATCHSITE_WEBHOOK_SECRET_OVERLAP_SECONDS / 3600
            self.stderr.write(
                f"New webhook secret for account {found.name!r}; the previous one also signs "
                f"for {hours:g} more hours. Store it now:"
            )
        else:
            self.stderr.write(
                f"Webhook secret for account {found.name!r}; deliveries are signed from now "
                "on. Store it now:"
            )
        self.stdout.write(secret)
