"""The benchmark scenarios, run in the child process on its own fresh database.

Each `scenario_*` function takes the command's options and returns its figures as a dict:
at least `items`, `seconds` and `items_per_s`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from batchsite.bench.lockwait import lock_waits_sampled
from batchsite.bench.processes import (
    clusters_wait_ready,
    peak_rss_mb,
    running_clusters,
    wait_until,
    web_server,
)

SCENARIOS = ["raw-insert", "naive", "batchsite", "ingest-api", "ingest-jsonl"]
# Not run unless asked for with --scenario: they measure job types, not the engine, or (scale-out)
# process the same batch several times over.
EXTRA_SCENARIOS = ["image-derive", "document-sign", "scale-out"]
API_REQUEST_ITEMS = 10_000


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
            async_task("batchsite.bench.scenarios.naive_echo_task", item_id)
        done = Item.objects.filter(batch=batch, status="succeeded")
        wait_until(lambda: done.count() >= count, timeout=3600, clusters=running)
        elapsed = time.perf_counter() - started
    return {"items": count, "seconds": elapsed, "items_per_s": count / elapsed,
            "worker_peak_rss_mb": running.peak_mb}  # fmt: skip


def scenario_batchsite(
    *, items: int, workers: int, clusters: int, **_options: Any
) -> dict[str, Any]:
    """Create, fill (service layer) and commit one batch; wait until it is finished.

    On PostgreSQL the figures include the clusters' lock-wait shares from commit to
    `finished` (`lockwait`).
    """
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
        with lock_waits_sampled() as lock_waits:
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
        **lock_waits,
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


def scenario_scale_out(
    *, items: int, workers: int, max_clusters: int, sleep_ms: int = 0, **_options: Any
) -> dict[str, Any]:
    """Process one batch of `items` with 1, 2, ... max_clusters qcluster processes.

    Each round fills a fresh batch (not timed), starts that many clusters, waits until they
    are up, commits, and times commit to `finished`. With `sleep_ms` each item takes that
    long, as an item of a job type that waits on another service would. On PostgreSQL each
    round also gets the share of the clusters' connection time (and of their active time)
    spent waiting for a lock, sampled from commit to `finished` (`lockwait`).
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
            with lock_waits_sampled() as lock_waits:
                elapsed = _commit_and_wait(batch, running, expected=items)
        rounds[str(count)] = {
            "seconds": elapsed,
            "items_per_s": items / elapsed,
            "worker_peak_rss_mb": running.peak_mb,
            **lock_waits,
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
