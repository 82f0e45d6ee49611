"""Create a batch from a JSONL, CSV or ZIP file, and optionally commit it and wait for it."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from batches import services
from batches.exceptions import DomainError
from batches.ingest import formats
from batches.management.operator import (
    account_find,
    batch_summary,
    batch_watch,
    command_actor,
    console_for,
)
from batches.models import Account, Batch

CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv", "zip": "application/zip"}
DEFAULT_ACCOUNT = "demo"
ERRORS_SHOWN = 10


def account_find_or_default(reference: str | None) -> Account:
    """Return the account a name or number names; without one, the only account (or demo)."""
    if reference:
        return account_find(reference)
    accounts = list(Account.objects.order_by("number")[:2])
    if len(accounts) > 1:
        raise CommandError("there is more than one account; name one with --account NAME_OR_NUMBER")
    if accounts:
        return accounts[0]
    return services.account_create(name=DEFAULT_ACCOUNT)


class Command(BaseCommand):
    help = (
        "Upload a JSONL, CSV or ZIP file as one new batch (the format comes from the file's "
        "extension: .jsonl/.ndjson, .csv, .zip) and print its id, number and how many lines "
        "were added and rejected. --commit queues it; --wait then shows its progress until it "
        "ends, and fails unless it ended `finished` with no failed item."
    )

    def add_arguments(self, parser):
        parser.add_argument("--type", required=True, help="job type of the batch's items")
        parser.add_argument("--file", required=True, help="a .jsonl, .ndjson, .csv or .zip file")
        parser.add_argument(
            "--account",
            help="account name or number; needed when there is more than one account "
            f"(default: the only account, or a new {DEFAULT_ACCOUNT!r} account)",
        )
        parser.add_argument("--label", default="", help="a label for the batch")
        parser.add_argument("--commit", action="store_true", help="commit the batch")
        parser.add_argument(
            "--wait", action="store_true", help="with --commit: show progress until it ends"
        )
        parser.add_argument(
            "--interval", type=float, default=1.0, help="seconds between polls with --wait"
        )

    def handle(self, *args, **options):
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"file {path} not found")
        fmt = formats.format_of_name(path.name)
        if fmt is None:
            raise CommandError(
                f"cannot tell the format of {path.name} from its extension; "
                "use .jsonl, .ndjson, .csv or .zip"
            )
        if options["wait"] and not options["commit"]:
            raise CommandError("--wait needs --commit: an uncommitted batch never ends")
        if options["interval"] <= 0:
            raise CommandError("--interval must be more than 0 seconds")
        account = account_find_or_default(options["account"])
        if not account.is_active:
            raise CommandError(f"account {account.name!r} is inactive")
        actor = command_actor()
        try:
            batch, _ = services.batch_create(
                account=account, actor=actor, type=options["type"], label=options["label"]
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        report = self._upload(batch, path, fmt, actor)
        self.stdout.write(
            f"batch {batch.pk} number {batch.number}: "
            f"added {report['added']}, rejected {report['rejected']}"
        )
        for error in report["errors"][:ERRORS_SHOWN]:
            self.stderr.write(f"  line {error['index']}: {error['message']}")
        if report["rejected"] > ERRORS_SHOWN:
            self.stderr.write(f"  … see batchstatus {batch.number} and the admin for the rest")
        if not options["commit"]:
            return
        try:
            batch = services.batch_commit(batch=batch, actor=actor)
        except DomainError as exc:
            raise CommandError(f"cannot commit batch {batch.number}: {exc.message}") from exc
        if not options["wait"]:
            self.stdout.write(f"committed batch {batch.number}")
            return
        self._wait(batch, options["interval"])

    def _upload(self, batch: Batch, path: Path, fmt: str, actor: str) -> dict:
        try:
            with path.open("rb") as stream:
                return services.batch_upload(
                    batch=batch,
                    stream=stream,
                    content_type=CONTENT_TYPES[fmt],
                    content_length=path.stat().st_size,
                    actor=actor,
                )
        except DomainError as exc:
            # Nothing of a refused file lands, not even the empty batch.
            services.batch_delete(batch=batch, actor=actor)
            details = [
                f"{error.get('external_id') or error.get('field') or error.get('index')}: "
                f"{error['message']}"
                for error in getattr(exc, "errors", [])[:3]
                if error.get("message") and error["message"] != exc.message
            ]
            suffix = f" ({'; '.join(details)})" if details else ""
            raise CommandError(f"{path.name}: {exc.message}{suffix}") from exc

    def _wait(self, batch: Batch, interval: float) -> None:
        console = console_for(self.stdout)
        try:
            batch = batch_watch(batch, console=console, interval=interval)
        except KeyboardInterrupt:
            raise CommandError(
                f"stopped waiting; batch {batch.number} goes on (see batchstatus {batch.number})",
                returncode=130,
            ) from None
        console.print(batch_summary(batch))
        if batch.status != Batch.Status.FINISHED or batch.failed_items:
            ended = f"ended {batch.status}"
            if batch.status == Batch.Status.FINISHED:
                ended = "finished with failed items"
            raise CommandError(
                f"batch {batch.number} {ended}: {batch.succeeded_items} succeeded, "
                f"{batch.failed_items} failed, {batch.cancelled_items} cancelled"
            )
