"""Benchmark scenarios run by `manage.py benchmark`, each in a throw-away database.

The parent process (the command) starts one child process per scenario with its own
DATABASE_URL, data dir and queue name; the child migrates the fresh database, runs the
scenario and prints one JSON line. Figures are compared as ratios within one run, since
absolute times on shared machines are not stable.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

MANAGE = str(Path(__file__).resolve().parent.parent / "manage.py")
SCENARIOS = ["raw-insert", "naive", "batchsite", "ingest-api", "ingest-jsonl"]
# Not run unless asked for with --scenario: they measure job types, not the engine, or (scale-out)
# process the same batch several times over.
EXTRA_SCENARIOS = ["image-derive", "document-sign", "scale-out"]
API_REQUEST_ITEMS = 10_000


# --- processes and memory ------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Return every descendant of `pid` (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def peak_rss_mb(pid: int) -> float:
    """Return the peak resident set size of one process in MB (VmHWM), 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_peak_rss_mb(pid: int) -> float:
    """Return the largest peak RSS among a process and its descendants."""
    return max([peak_rss_mb(p) for p in [pid, *_children(pid)]] or [0.0])


@dataclass
class Clusters:
    """Real `manage.py qcluster` processes for a scenario."""

    count: int
    workers: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    peak_mb: float = 0.0

    def start(self) -> Clusters:
        env = {**os.environ, "BATCHSITE_WORKERS": str(self.workers)}
        for _ in range(self.count):
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, MANAGE, "qcluster"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        return self

    def sample(self) -> None:
        """Record the workers' peak memory so far."""
        for process in self.processes:
            self.peak_mb = max(self.peak_mb, tree_peak_rss_mb(process.pid))

    def stop(self) -> None:
        self.sample()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def running_clusters(count: int, workers: int):
    """Run `count` qclusters of `workers` workers for the block; stop them after it."""
    clusters = Clusters(count=count, workers=workers).start()
    try:
        yield clusters
    finally:
        clusters.stop()


def wait_until(predicate, *, timeout: float, clusters: Clusters | None = None) -> float:
    """Poll `predicate` until true; return the elapsed seconds."""
    started = time.perf_counter()
    last_sample = 0.0
    while not predicate():
        now = time.perf_counter()
        if now - started > timeout:
            raise TimeoutError(f"not done after {timeout:.0f}s")
        if clusters and now - last_sample > 1:
            clusters.sample()
            last_sample = now
        time.sleep(0.1)
    return time.perf_counter() - started


# --- scenarios (run in the child) -----------------------------------------------------------------


def _account():
    from batches import services
    from batches.models import Account

    return Account.objects.filter(name="bench").first() or services.account_create(name="bench")


def _payloads(start: int, stop: int) -> list[dict]:
    return [{"payload": {"n": n}} for n in range(start, stop)]


def scenario_raw_insert(*, items: int, **_options: Any) -> dict[str, Any]:
    """Insert item rows with the fastest path the database has: the limit for ingest."""
    from django.db import connection

    from batches import services
    from batches.models import Item

    batch, _ = services.batch_create(account=_account(), actor="bench")
    columns = ["batch_id", "index", "type", "payload", "status", "external_id", "key",
               "input_file", "output_files", "error_code", "error_message", "attempts"]  # fmt: skip
    batch_value = Item._meta.get_field("batch").get_db_prep_value(batch.pk, connection)
    rows = ((batch_value, n, "echo", f'{{"n":{n}}}', "pending", "", "", "", "[]", "", "", 0)
            for n in range(items))  # fmt: skip
    connection.ensure_connection()
    raw = connection.connection
    table = Item._meta.db_table
    started = time.perf_counter()
    quoted = ", ".join(f'"{column}"' for column in columns)
    if connection.vendor == "postgresql":
        with raw.cursor() as cursor, cursor.copy(f'COPY "{table}" ({quoted}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        raw.commit()
    else:
        marks = ", ".join("?" * len(columns))
        raw.execute("BEGIN")
        raw.executemany(f'INSERT INTO "{table}" ({quoted}) VALUES ({marks})', rows)
        raw.execute("COMMIT")
    elapsed = time.perf_counter() - started
    return {"items": items, "seconds": elapsed, "items_per_s": items / elapsed}


def naive_echo_task(item_id: int) -> None:
    """What a user would write without batchsite: one task per item, one row per task."""
    from django.utils import timezone

    from batches.models import Item
    from jobs import JobContext
    from jobs.echo import Echo

    item = Item.objects.get(pk=item_id)
    result = Echo().process(item.payload, None, JobContext())
    Item.objects.filter(pk=item_id).update(
        status="succeeded", result=result, finished_at=timezone.now()
    )


def scenario_naive(
    *, items: int, naive_items: int, workers: int, clusters: int, **_options: Any
) -> dict[str, Any]:
    """Process items with one django-q2 async_task each: the baseline to beat."""
    from django_q.tasks import async_task

    from batches import services
    from batches.models import Item

    count = min(items, naive_items)
    batch, _ = services.batch_create(account=_account(), actor="bench")
    for start in range(0, count, 10_000):
        services.items_add(
            batch=batch, items=_payloads(start, min(count, start + 10_000)), actor="bench"
        )
    ids = list(Item.objects.filter(batch=batch).values_list("pk", flat=True))
    with running_clusters(clusters, workers) as running:
        started = time.perf_counter()
        for item_id in ids:
            async_task("batchsite.bench.naive_echo_task", item_id)
        done = Item.objects.filter(batch=batch, status="succeeded")
        wait_until(lambda: done.count() >= count, timeout=3600, clusters=running)
        elapsed = time.perf_counter() - started
    return {"items": count, "seconds": elapsed, "items_per_s": count / elapsed,
            "worker_peak_rss_mb": running.peak_mb}  # fmt: skip


def scenario_batchsite(
    *, items: int, workers: int, clusters: int, **_options: Any
) -> dict[str, Any]:
    """Create, fill (service layer) and commit one batch; wait until it is finished."""
    from batches import services
    from batches.models import Batch

    with running_clusters(clusters, workers) as running:
        started = time.perf_counter()
        batch, _ = services.batch_create(account=_account(), actor="bench")
        for start in range(0, items, 10_000):
            services.items_add(
                batch=batch, items=_payloads(start, min(items, start + 10_000)), actor="bench"
            )
        filled = time.perf_counter()
        services.batch_commit(batch=batch, actor="bench")
        committed = time.perf_counter()
        ended = Batch.objects.filter(pk=batch.pk, status__in=Batch.TERMINAL)
        wait_until(ended.exists, timeout=3600, clusters=running)
        finished = time.perf_counter()
    batch.refresh_from_db()
    if batch.status != Batch.Status.FINISHED or batch.succeeded_items != items:
        raise RuntimeError(f"batch ended {batch.status} with counts {batch.counts()}")
    process_seconds = finished - committed
    return {
        "items": items,
        "seconds": finished - started,
        "items_per_s": items / process_seconds,
        "ingest_seconds": filled - started,
        "ingest_items_per_s": items / (filled - started),
        "commit_to_finished_seconds": process_seconds,
        "worker_peak_rss_mb": running.peak_mb,
    }


def _commit_and_wait(batch, running, *, expected: int) -> float:
    """Commit the batch, wait until it ends, check every item succeeded; return the seconds."""
    from batches import services
    from batches.models import Batch

    started = time.perf_counter()
    services.batch_commit(batch=batch, actor="bench")
    ended = Batch.objects.filter(pk=batch.pk, status__in=Batch.TERMINAL)
    wait_until(ended.exists, timeout=3600, clusters=running)
    elapsed = time.perf_counter() - started
    batch.refresh_from_db()
    if batch.status != Batch.Status.FINISHED or batch.succeeded_items != expected:
        raise RuntimeError(f"batch ended {batch.status} with counts {batch.counts()}")
    return elapsed


def _file_batch(*, type_name: str, count: int, make_file, workers: int, clusters: int):
    """Upload `count` files as one ZIP to a batch of `type_name`, commit, wait for the end."""
    import io
    import zipfile

    from batches import services

    package = Path(settings.BATCHSITE_DATA_DIR) / "bench-files.zip"
    with zipfile.ZipFile(package, "w") as archive:
        for n in range(count):
            name, data = make_file(n)
            archive.writestr(name, data)
    with running_clusters(clusters, workers) as running:
        batch, _ = services.batch_create(account=_account(), actor="bench", type=type_name)
        with open(package, "rb") as body:
            services.batch_upload(
                batch=batch,
                stream=io.BufferedReader(body),
                content_type="application/zip",
                content_length=package.stat().st_size,
                actor="bench",
            )
        elapsed = _commit_and_wait(batch, running, expected=count)
    return {"items": count, "seconds": elapsed, "items_per_s": count / elapsed,
            "worker_peak_rss_mb": running.peak_mb}  # fmt: skip


FILE_SCENARIO_LIMIT = 10_000


def scenario_image_derive(
    *, items: int, workers: int, clusters: int, **_options: Any
) -> dict[str, Any]:
    """Derive the default four sizes from 1024x768 JPEG photos-to-be (`image.derive`)."""
    import io

    from PIL import Image

    def make_file(n: int):
        image = Image.new("RGB", (1024, 768), ((n * 37) % 256, (n * 91) % 256, (n * 13) % 256))
        for x in range(0, 1024, 64):
            image.paste((x % 256, 255 - x % 256, n % 256), (x, 0, x + 32, 768))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return f"image-{n}.jpg", out.getvalue()

    count = min(items, FILE_SCENARIO_LIMIT)
    return _file_batch(
        type_name="image.derive", count=count, make_file=make_file, workers=workers,
        clusters=clusters,
    )  # fmt: skip


def scenario_document_sign(
    *, items: int, workers: int, clusters: int, **_options: Any
) -> dict[str, Any]:
    """Sign 100 KB documents with a detached CMS signature each (`document.sign`)."""
    from django.core.management import call_command

    call_command("createsigningkey", "--force", verbosity=0, stdout=io_sink(), stderr=io_sink())

    def make_file(n: int):
        return f"document-{n}.pdf", (f"document {n} ".encode() * 8000)[:100_000]

    count = min(items, FILE_SCENARIO_LIMIT)
    return _file_batch(
        type_name="document.sign", count=count, make_file=make_file, workers=workers,
        clusters=clusters,
    )  # fmt: skip


def io_sink():
    """Return a throw-away text stream for a command's output."""
    import io

    return io.StringIO()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scenario_ingest_api(*, items: int, **_options: Any) -> dict[str, Any]:
    """Add items over real HTTP, 10,000 per request, to a web server on loopback."""
    import httpx

    from batches import services

    _, key = services.api_key_create(account=_account(), name="bench")
    headers = {"Authorization": f"Api-Key {key}"}
    with web_server() as (server, base):
        with httpx.Client(headers=headers, timeout=300) as client:
            wait_until(lambda: _answers(client, f"{base}/job-types/"), timeout=60)
            batch = client.post(f"{base}/batches/", json={}).json()
            bodies = [
                json.dumps(_payloads(start, min(items, start + API_REQUEST_ITEMS))).encode()
                for start in range(0, items, API_REQUEST_ITEMS)
            ]
            started = time.perf_counter()
            for body in bodies:
                response = client.post(
                    f"{base}/batches/{batch['id']}/items/",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                response.raise_for_status()
            elapsed = time.perf_counter() - started
        web_peak = peak_rss_mb(server.pid)
    return {"items": items, "seconds": elapsed, "items_per_s": items / elapsed,
            "web_peak_rss_mb": web_peak}  # fmt: skip


@contextmanager
def web_server():
    """Run `manage.py runserver` on a free loopback port; yield (process, base API URL)."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, MANAGE, "runserver", "--noreload", "--nothreading", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield server, f"http://127.0.0.1:{port}/api/v1"
    finally:
        server.terminate()
        server.wait(timeout=30)


def scenario_ingest_jsonl(*, items: int, **_options: Any) -> dict[str, Any]:
    """Upload one JSONL file of `items` lines over HTTP, then export them all again."""
    import httpx

    from batches import services

    _, key = services.api_key_create(account=_account(), name="bench")
    source = Path(settings.BATCHSITE_DATA_DIR) / "bench-upload.jsonl"
    with open(source, "w") as out:
        for n in range(items):
            out.write(f'{{"external_id": "e{n}", "payload": {{"n": {n}}}}}\n')
    with (
        web_server() as (server, base),
        httpx.Client(headers={"Authorization": f"Api-Key {key}"}, timeout=3600) as client,
    ):
        wait_until(lambda: _answers(client, f"{base}/job-types/"), timeout=60)
        batch = client.post(f"{base}/batches/", json={}).json()
        started = time.perf_counter()
        with open(source, "rb") as body:
            response = client.post(
                f"{base}/batches/{batch['id']}/upload/",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            )
        response.raise_for_status()
        upload_seconds = time.perf_counter() - started
        if response.json()["added"] != items:
            raise RuntimeError(f"upload added {response.json()['added']} of {items}")
        upload_peak = peak_rss_mb(server.pid)
        started = time.perf_counter()
        exported = 0
        with client.stream("GET", f"{base}/batches/{batch['id']}/export/?format=jsonl") as stream:
            for line in stream.iter_lines():
                exported += bool(line)
        export_seconds = time.perf_counter() - started
        if exported != items:
            raise RuntimeError(f"export gave {exported} of {items} items")
        peak = peak_rss_mb(server.pid)
    source.unlink()
    return {
        "items": items,
        "seconds": upload_seconds,
        "items_per_s": items / upload_seconds,
        "web_peak_rss_mb": upload_peak,
        "export_seconds": export_seconds,
        "export_items_per_s": items / export_seconds,
        "web_peak_rss_after_export_mb": peak,
    }


def clusters_wait_ready(count: int, *, timeout: float = 60) -> None:
    """Wait until `count` clusters report their workers up (django-q2's stats, a few s old)."""
    from django_q.conf import Conf
    from django_q.status import Stat

    def ready() -> bool:
        up = [stat for stat in Stat.get_all() if stat.status in (Conf.IDLE, Conf.WORKING)]
        return len(up) >= count

    wait_until(ready, timeout=timeout)


def scenario_scale_out(
    *, items: int, workers: int, max_clusters: int, sleep_ms: int = 0, **_options: Any
) -> dict[str, Any]:
    """Process one batch of `items` with 1, 2, ... max_clusters qcluster processes.

    Each round fills a fresh batch (not timed), starts that many clusters, waits until they
    are up, commits, and times commit to `finished`. With `sleep_ms` each item takes that
    long, as an item of a job type that waits on another service would.
    """
    from batches import services

    rounds = {}
    for count in range(1, max_clusters + 1):
        batch, _ = services.batch_create(account=_account(), actor="bench")
        for start in range(0, items, 10_000):
            payloads = _payloads(start, min(items, start + 10_000))
            if sleep_ms:
                for item in payloads:
                    item["payload"]["sleep_ms"] = sleep_ms
            services.items_add(batch=batch, items=payloads, actor="bench")
        with running_clusters(count, workers) as running:
            clusters_wait_ready(count)
            elapsed = _commit_and_wait(batch, running, expected=items)
        rounds[str(count)] = {
            "seconds": elapsed,
            "items_per_s": items / elapsed,
            "worker_peak_rss_mb": running.peak_mb,
        }
        # Stopped clusters' stats linger a few seconds; the next round counts only its own.
        time.sleep(4)
    one = rounds["1"]["items_per_s"]
    for figures in rounds.values():
        figures["vs_1_cluster"] = figures["items_per_s"] / one
    return {"items": items, "seconds": rounds["1"]["seconds"], "items_per_s": one,
            "sleep_ms": sleep_ms, "clusters": rounds}  # fmt: skip


def _answers(client, url: str) -> bool:
    import httpx

    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False


SCENARIO_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "raw-insert": scenario_raw_insert,
    "naive": scenario_naive,
    "batchsite": scenario_batchsite,
    "ingest-api": scenario_ingest_api,
    "ingest-jsonl": scenario_ingest_jsonl,
    "image-derive": scenario_image_derive,
    "document-sign": scenario_document_sign,
    "scale-out": scenario_scale_out,
}


def run_in_child(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Migrate this child's fresh database and run one scenario."""
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    return SCENARIO_FUNCTIONS[name](**options)


# --- the parent: a throw-away database per scenario -------------------------------------------


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
    if report["ratios"]:
        lines.append("")
        lines.extend(f"{name}: {value:.2f}x" for name, value in report["ratios"].items())
    return "\n".join(lines)
