"""The benchmark's parent side: a throw-away database per scenario, and the report.

`run_scenario` starts one child process (`manage.py benchmark --child NAME`) per scenario
with its own DATABASE_URL, data dir and queue name, and reads the one JSON line it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager
from typing import Any

from django.conf import settings

from batchsite.bench.processes import MANAGE


@contextmanager
def throwaway_environment(*, database: str, broker: str, postgres_url: str, redis_url: str):
    """Yield environment variables naming a new empty database, data dir and queue."""
    tag = uuid.uuid4().hex[:10]
    with tempfile.TemporaryDirectory(prefix="batchsite-bench-") as data_dir:
        env = {
            "BATCHSITE_DATA_DIR": data_dir,
            "BATCHSITE_QUEUE_NAME": f"bench-{tag}",
            "DJANGO_SETTINGS_MODULE": "batchsite.settings",
            "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or uuid.uuid4().hex * 2,
            "BATCHSITE_BROKER_URL": redis_url if broker == "redis" else "",
        }
        if database == "sqlite":
            env["DATABASE_URL"] = f"sqlite:///{data_dir}/bench.sqlite3"
            yield env
            return
        import psycopg

        name = f"batchsite_bench_{tag}"
        with psycopg.connect(f"{postgres_url}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            env["DATABASE_URL"] = f"{postgres_url}/{name}"
            yield env
        finally:
            with psycopg.connect(f"{postgres_url}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_scenario(name: str, *, database: str, broker: str, options: dict[str, Any]):
    """Run one scenario in a child process on a throw-away database; return its figures."""
    with throwaway_environment(
        database=database,
        broker=broker,
        postgres_url=options.pop("postgres_url"),
        redis_url=options.pop("redis_url"),
    ) as env:
        child = subprocess.run(
            [sys.executable, MANAGE, "benchmark", "--child", name,
             "--child-options", json.dumps(options)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )  # fmt: skip
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        tail = (child.stderr or child.stdout)[-3000:]
        raise RuntimeError(f"scenario {name} failed:\n{tail}")
    return json.loads(lines[-1])


def default_redis_url() -> str:
    """Return the Redis URL for --broker redis: BATCHSITE_BROKER_URL, or a local one."""
    configured = settings.BATCHSITE_BROKER_URL
    return configured if configured.startswith("redis") else "redis://127.0.0.1:6379/5"


def ratios(results: dict[str, dict]) -> dict[str, float]:
    """Compare scenarios measured in the same run."""
    rate = {name: result["items_per_s"] for name, result in results.items()}
    found = {}
    if "batchsite" in rate and "naive" in rate:
        found["batchsite / naive (processing items/s)"] = rate["batchsite"] / rate["naive"]
    if "ingest-api" in rate and "raw-insert" in rate:
        found["ingest-api / raw-insert (items/s)"] = rate["ingest-api"] / rate["raw-insert"]
    if "ingest-jsonl" in rate and "raw-insert" in rate:
        found["ingest-jsonl / raw-insert (items/s)"] = rate["ingest-jsonl"] / rate["raw-insert"]
    if "batchsite" in results and "raw-insert" in rate:
        ingest = results["batchsite"]["ingest_items_per_s"]
        found["service ingest / raw-insert (items/s)"] = ingest / rate["raw-insert"]
    for count, figures in results.get("scale-out", {}).get("clusters", {}).items():
        if count != "1":
            found[f"scale-out {count} clusters / 1 cluster (items/s)"] = figures["vs_1_cluster"]
    return found


def format_table(report: dict) -> str:
    """Render a report as a plain-text table."""
    lines = [
        f"database={report['database']} broker={report['broker']} items={report['items']} "
        f"clusters={report['clusters']} workers/cluster={report['workers']}",
        "",
        f"{'scenario':<12} {'items':>9} {'seconds':>9} {'items/s':>11}  notes",
    ]
    for name, result in report["scenarios"].items():
        notes = []
        if "commit_to_finished_seconds" in result:
            notes.append(f"commit→finished {result['commit_to_finished_seconds']:.2f}s")
            notes.append(f"ingest {result['ingest_items_per_s']:,.0f}/s")
        if result.get("worker_peak_rss_mb"):
            notes.append(f"worker peak RSS {result['worker_peak_rss_mb']:.0f} MB")
        if result.get("web_peak_rss_mb"):
            notes.append(f"web peak RSS {result['web_peak_rss_mb']:.0f} MB")
        if result.get("sleep_ms"):
            notes.append(f"{result['sleep_ms']} ms per item")
        if "lock_wait_share" in result:
            notes.append(f"lock wait {_lock_waits(result)}")
        for count, figures in result.get("clusters", {}).items():
            notes.append(f"{count} cluster(s) {figures['items_per_s']:,.0f}/s")
        if "export_seconds" in result:
            notes.append(
                f"export {result['export_items_per_s']:,.0f}/s, web peak RSS after export "
                f"{result['web_peak_rss_after_export_mb']:.0f} MB"
            )
        lines.append(
            f"{name:<12} {result['items']:>9,} {result['seconds']:>9.2f} "
            f"{result['items_per_s']:>11,.0f}  {'; '.join(notes)}"
        )
    lines.extend(_scale_out_lock_waits(report["scenarios"].get("scale-out", {})))
    if report["ratios"]:
        lines.append("")
        lines.extend(f"{name}: {value:.2f}x" for name, value in report["ratios"].items())
    return "\n".join(lines)


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


def _lock_waits(figures: dict) -> str:
    """Render the lock-wait shares of a result or round (`lockwait`) in a few words."""
    if figures["lock_wait_share"] is None:
        return "n/a (no worker connection seen)"
    return (
        f"{_percent(figures['lock_wait_share'])} of worker connection time, "
        f"{_percent(figures['lock_wait_share_of_active'])} of active time"
    )


def _scale_out_lock_waits(result: dict) -> list[str]:
    """Return one line per scale-out round with its lock-wait shares (PostgreSQL runs only)."""
    rounds = result.get("clusters", {})
    if not any("lock_wait_share" in figures for figures in rounds.values()):
        return []
    lines = ["", f"{'scale-out':<12} {'items/s':>9} {'vs 1':>6}  lock wait (sampled every 20 ms)"]
    for count, figures in rounds.items():
        lock_waits = _lock_waits(figures) if "lock_wait_share" in figures else "n/a"
        lines.append(
            f"{count + ' cluster(s)':<12} {figures['items_per_s']:>9,.0f} "
            f"{figures['vs_1_cluster']:>5.2f}x  {lock_waits}"
        )
    return lines
