"""The `batchsite` command: submit a file of items, watch a batch, print its results.

It reads the server's URL from BATCHSITE_URL (default http://127.0.0.1:8000) and the API
key from BATCHSITE_KEY (`make run` prints `export BATCHSITE_KEY=...`). Exit status: 0 when
all went well, 1 on an error (said on one line), 2 on a usage error, and 3 when a batch
waited for ended otherwise than `finished` (stopped, cancelled, failed, expired).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from batchsite_client.client import Client, Progress
from batchsite_client.errors import BatchsiteError
from batchsite_client.types import TERMINAL_STATUSES, Batch

EXIT_ERROR = 1
EXIT_NOT_FINISHED = 3
DEFAULT_URL = "http://127.0.0.1:8000"


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the command line."""
    parser = argparse.ArgumentParser(
        prog="batchsite", description="Submit and follow batches on a batchsite server."
    )
    parser.add_argument(
        "--url", default=os.environ.get("BATCHSITE_URL", DEFAULT_URL),
        help="the server (default: $BATCHSITE_URL or %(default)s)",
    )  # fmt: skip
    parser.add_argument("--key", help="the API key (default: $BATCHSITE_KEY)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="create a batch from a file and commit it")
    submit.add_argument("file", metavar="FILE", help="JSONL, JSON, CSV or ZIP file of items")
    submit.add_argument("--type", required=True, help="job type of the items")
    submit.add_argument("--label", help="the batch's label")
    submit.add_argument("--content-type", help="the file's type (default: from its extension)")
    submit.add_argument("--no-commit", action="store_true", help="leave the batch open")
    submit.add_argument("--wait", action="store_true", help="wait for the batch to end")
    submit.add_argument("--poll", type=float, default=2.0, help="seconds between polls")

    status = commands.add_parser("status", help="show a batch's state and counts")
    status.add_argument("id", metavar="ID")
    status.add_argument("--watch", action="store_true", help="follow it until it ends")
    status.add_argument("--json", action="store_true", help="print the batch as JSON")
    status.add_argument("--poll", type=float, default=2.0, help="seconds between polls")

    results = commands.add_parser("results", help="print results as JSON lines as items end")
    results.add_argument("id", metavar="ID")
    results.add_argument("--status", choices=["succeeded", "failed"])
    results.add_argument("--no-follow", action="store_true", help="stop at what has ended so far")
    return parser


def summary(batch: Batch) -> str:
    """Say a batch's state in one line: id, status, items ended of all, and outcomes."""
    counts = batch["counts"]
    ended = counts["succeeded"] + counts["failed"] + counts["cancelled"]
    line = (
        f"{batch['id']} {batch['status']}{' (paused)' if batch.get('paused') else ''} "
        f"{ended}/{counts['total']} ({batch['progress']:.0%}): "
        f"{counts['succeeded']} succeeded, {counts['failed']} failed"
    )
    return line + (f", {counts['cancelled']} cancelled" if counts["cancelled"] else "")


def line_printer(out: TextIO) -> Callable[[Batch], None]:
    """Return a progress function that prints the summary whenever it changes.

    The end is left to the caller, which prints the ended batch where its output goes.
    """
    last = ""

    def report(batch: Batch) -> None:
        nonlocal last
        line = summary(batch)
        if line != last and batch["status"] not in TERMINAL_STATUSES:
            print(line, file=out, flush=True)
            last = line

    return report


def progress_for(out: TextIO) -> Progress:
    """Return a tqdm bar where tqdm is installed and `out` is a terminal, else summary lines."""
    if out.isatty() and importlib.util.find_spec("tqdm") is not None:
        return "tqdm"
    return line_printer(out)


def ended_code(batch: Batch) -> int:
    """Return the exit status for a batch waited for."""
    return 0 if batch["status"] == "finished" else EXIT_NOT_FINISHED


def submit(client: Client, args: argparse.Namespace) -> int:
    """Create a batch, upload the file into it, commit it, and maybe wait for its end."""
    batch = client.create_batch(type=args.type, label=args.label)
    report = client.upload(batch, args.file, args.content_type)
    print(f"added {report['added']} items, rejected {report['rejected']}", file=sys.stderr)
    for error in report.get("errors", [])[:10]:
        print(f"  line {error['index']}: {error['message']}", file=sys.stderr)
    if not args.no_commit:
        client.commit(batch)
    print(batch["id"], flush=True)
    if not args.wait:
        return 0
    ended = client.wait(batch, poll_interval=args.poll, progress=progress_for(sys.stderr))
    print(summary(ended), file=sys.stderr)
    return ended_code(ended)


def status(client: Client, args: argparse.Namespace) -> int:
    """Print the batch's state once, or follow it (on stderr) until it ends."""
    if args.watch:
        batch = client.wait(args.id, poll_interval=args.poll, progress=progress_for(sys.stderr))
    else:
        batch = client.get_batch(args.id)
    print(json.dumps(batch, indent=2) if args.json else summary(batch))
    return ended_code(batch) if args.watch else 0


def results(client: Client, args: argparse.Namespace) -> int:
    """Print each ended item as a JSON line, following the batch until it ends."""
    for item in client.iter_results(args.id, status=args.status, follow=not args.no_follow):
        print(json.dumps(item, ensure_ascii=False), flush=True)
    return 0


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "submit": submit,
    "status": status,
    "results": results,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    key = args.key or os.environ.get("BATCHSITE_KEY")
    if not key:
        parser.exit(EXIT_ERROR, "batchsite: error: no API key: set BATCHSITE_KEY or --key\n")
    try:
        with Client(args.url, key, timeout=args.timeout) as client:
            return COMMANDS[args.command](client, args)
    except (BatchsiteError, OSError) as error:
        # One line, whatever the server's detail holds.
        print(f"batchsite: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
