"""Measure batchsite against the database's raw insert speed and a naive django-q2 set-up."""

import json

from django.core.management.base import BaseCommand, CommandError

from batchsite.bench import harness
from batchsite.bench.scenarios import EXTRA_SCENARIOS, SCENARIOS, run_in_child


class Command(BaseCommand):
    help = (
        "Run benchmark scenarios, each in a fresh throw-away database with real qcluster "
        "workers, and print items/s and the ratios between them (measured in this run)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--items", type=int, default=100_000, help="items per scenario")
        parser.add_argument(
            "--scenario",
            action="append",
            choices=[*SCENARIOS, *EXTRA_SCENARIOS],
            help=(
                "scenario to run (repeatable; default: all but the job-type scenarios "
                "image-derive and document-sign, and scale-out)"
            ),
        )
        parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
        parser.add_argument("--broker", choices=["orm", "redis"], default="orm")
        parser.add_argument("--workers", type=int, default=2, help="workers per cluster")
        parser.add_argument("--clusters", type=int, default=1, help="qcluster processes")
        parser.add_argument(
            "--max-clusters",
            type=int,
            default=3,
            help="scale-out: process the batch with 1, 2, ... this many qcluster processes",
        )
        parser.add_argument(
            "--sleep-ms",
            type=int,
            default=0,
            help="scale-out: each echo item takes this many ms (work that waits, not computes)",
        )
        parser.add_argument(
            "--naive-items",
            type=int,
            default=2000,
            help="items for the naive scenario (it runs one task per item, so keep it small)",
        )
        parser.add_argument(
            "--postgres-url",
            default="postgres://postgres@127.0.0.1:5432",
            help="server for --database postgres; a database is created and dropped there",
        )
        parser.add_argument("--redis-url", default=None, help="for --broker redis")
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        parser.add_argument("--child", help="(internal) run one scenario here")
        parser.add_argument("--child-options", help="(internal)")

    def handle(self, *args, **options):
        if options["child"]:
            result = run_in_child(options["child"], json.loads(options["child_options"]))
            self.stdout.write(json.dumps(result))
            return
        if min(options[name] for name in ("items", "workers", "clusters", "max_clusters")) < 1:
            raise CommandError(
                "--items, --workers, --clusters and --max-clusters must be at least 1"
            )
        if options["sleep_ms"] < 0:
            raise CommandError("--sleep-ms must be 0 or more")
        scenarios = options["scenario"] or SCENARIOS
        shared = {
            "items": options["items"],
            "naive_items": options["naive_items"],
            "workers": options["workers"],
            "clusters": options["clusters"],
            "max_clusters": options["max_clusters"],
            "sleep_ms": options["sleep_ms"],
        }
        results = {}
        for name in scenarios:
            if not options["json"]:
                self.stderr.write(f"running {name} ...")
            try:
                results[name] = harness.run_scenario(
                    name,
                    database=options["database"],
                    broker=options["broker"],
                    options={
                        **shared,
                        "postgres_url": options["postgres_url"],
                        "redis_url": options["redis_url"] or harness.default_redis_url(),
                    },
                )
            except RuntimeError as exc:
                raise CommandError(str(exc)) from exc
        report = {
            "database": options["database"],
            "broker": options["broker"],
            **shared,
            "scenarios": results,
            "ratios": harness.ratios(results),
        }
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.stdout.write(harness.format_table(report))
