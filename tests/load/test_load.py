"""Load and fault tests: gunicorn, three qcluster processes and 20 HTTP clients at once.

The plain load test wants no server error at all; the fault test kills a cluster with -9
and cuts every database connection while the clients go on, and wants the run to end
with nothing lost all the same. Both check every batch the clients made against the
database: ended, counters equal to a recount, exactly the items sent, each index once.
No timing is asserted; the figures are printed in pytest's summary.
"""

from __future__ import annotations

import os
import time

import pytest
from django.db import connection
from django.db.models import Count, IntegerField, Max, Min, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from batches import services
from batches.models import Batch, Chunk, Item
from tests.helpers import recount
from tests.load.conftest import figures_report
from tests.load.driver import Recorder, SentBatch, request_figures, run_clients

pytestmark = [
    pytest.mark.load,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(1800),
]

CLIENTS = 20
CLUSTERS = 3
WORKERS = 2
# Clients stop starting batches when the load window closes; they go on polling the
# batches they started for this long before the test waits on the database instead.
POLL_GRACE_SECONDS = 120
PRODUCTION_SETTINGS = {"DJANGO_SETTINGS_MODULE": "batchsite.settings"}
# Short enough for the fault test's recovery to happen within it: a dead worker's chunk is
# taken over 10 s after its last renewal, a task lost with the killed cluster is sent again
# after 20 s, and the sweep runs every minute on every cluster (one at a time).
FAULT_SETTINGS = {
    **PRODUCTION_SETTINGS,
    "BATCHSITE_LEASE_SECONDS": "10",
    "BATCHSITE_REQUEUE_AFTER": "20",
    "BATCHSITE_SWEEP_MINUTES": "1",
}


def env_seconds(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def api_keys(count: int) -> list[str]:
    """Make one account with one API key per client, so each has its own rate limit."""
    keys = []
    for number in range(count):
        account = services.account_create(name=f"load-{number:02d}")
        _, raw = services.api_key_create(account=account, name="load")
        keys.append(raw)
    return keys


def load_run(*, web_server, clusters, seconds: float, faults=None) -> tuple[Recorder, float]:
    """Run the clients for `seconds` (calling `faults(started)` meanwhile); wait for them."""
    recorder = Recorder()
    started = time.monotonic()
    clients = run_clients(
        base_url=f"{web_server.base_url}/api/v1",
        keys=api_keys(CLIENTS),
        seconds=seconds,
        poll_grace=POLL_GRACE_SECONDS,
        recorder=recorder,
    )
    if faults:
        faults(started)
    for client in clients:
        client.join(timeout=max(1, started + seconds + POLL_GRACE_SECONDS + 120 - time.monotonic()))
    elapsed = time.monotonic() - started
    stuck = [client.name for client in clients if client.is_alive()]
    assert not stuck, f"clients still running after the load window and grace: {stuck}"
    errors = [f"{client.name}: {client.error!r}" for client in clients if client.error]
    assert not errors, f"clients crashed: {errors}"
    return recorder, elapsed


def chunk_statuses(batch: Batch) -> dict[str, int]:
    return dict(
        Chunk.objects.filter(batch=batch).values_list("status").annotate(Count("id")).order_by()
    )


def wait_all_ended(sent: list[SentBatch], *, web_server, clusters) -> None:
    """Wait (bounded) until every batch the clients made has ended; say which did not."""
    ids = [batch.id for batch in sent]
    timeout = env_seconds("BATCHSITE_LOAD_DRAIN_SECONDS", 300)
    deadline = time.monotonic() + timeout
    open_batches = Batch.objects.filter(pk__in=ids).exclude(status__in=Batch.TERMINAL)
    while open_batches.exists():
        if time.monotonic() > deadline:
            lines = [
                f"  {batch.pk} {batch.status} {batch.counts()} chunks {chunk_statuses(batch)}"
                for batch in open_batches[:10]
            ]
            logs = "\n".join(cluster.output()[-2000:] for cluster in clusters)
            raise AssertionError(
                f"{open_batches.count()} of {len(ids)} batches had not ended {timeout:.0f}s "
                f"after the clients stopped:\n" + "\n".join(lines) + f"\n--- cluster logs:\n{logs}"
                f"\n--- gunicorn:\n{web_server.output()[-2000:]}"
            )
        time.sleep(1)


def ledger(sent: list[SentBatch]) -> dict:
    """Compare every batch the clients made with the database; return counts of what is off."""
    ids = [batch.id for batch in sent]
    stored = {
        str(row["batch_id"]): row
        for row in Item.objects.filter(batch_id__in=ids)
        .values("batch_id")
        .order_by()
        .annotate(
            items=Count("id"),
            indexes=Count("index", distinct=True),
            low=Min("index"),
            high=Max("index"),
            succeeded=Count("id", filter=Q(status=Item.Status.SUCCEEDED)),
            # Item n was sent as index n: any other index means a request landed twice
            # or out of place.
            misplaced=Count("id", filter=~Q(index=Cast(KT("payload__n"), IntegerField()))),
        )
    }
    batches = {str(batch.pk): batch for batch in Batch.objects.filter(pk__in=ids)}
    result = {
        "batches": len(sent),
        "batches_in_db": Batch.objects.count(),
        "by_status": {},
        "items_sent": 0,
        "items_stored": 0,
        "lost": 0,
        "duplicated": 0,
        "misplaced": 0,
        "counter_mismatches": [],
        "unsucceeded_in_finished": 0,
        "client_problems": [],
    }
    for batch in sent:
        row = stored.get(batch.id, {"items": 0, "indexes": 0, "low": None, "high": None,
                                    "succeeded": 0, "misplaced": 0})  # fmt: skip
        db_batch = batches.get(batch.id)
        status = db_batch.status if db_batch else "missing"
        result["by_status"][status] = result["by_status"].get(status, 0) + 1
        result["items_sent"] += batch.items
        result["items_stored"] += row["items"]
        result["lost"] += max(0, batch.items - row["indexes"])
        result["duplicated"] += max(0, row["items"] - batch.items)
        result["misplaced"] += row["misplaced"]
        if row["items"] and (row["low"], row["high"]) != (0, batch.items - 1):
            result["misplaced"] += row["items"]
        if db_batch and db_batch.counts() != recount(db_batch):
            result["counter_mismatches"].append(
                {"batch": batch.id, "stored": db_batch.counts(), "recount": recount(db_batch)}
            )
        if status == Batch.Status.FINISHED:
            result["unsucceeded_in_finished"] += row["items"] - row["succeeded"]
        result["client_problems"].extend(f"{batch.id}: {p}" for p in batch.problems)
    timing = Batch.objects.filter(pk__in=ids).aggregate(
        first_commit=Min("committed_at"), last_finish=Max("finished_at"), items=Sum("total_items")
    )
    if timing["first_commit"] and timing["last_finish"]:
        span = (timing["last_finish"] - timing["first_commit"]).total_seconds()
        result["processing_seconds"] = span
        result["items_per_s"] = (timing["items"] or 0) / span if span > 0 else 0.0
    # A chunk is claimed again when its worker died or lost its connection mid-chunk.
    result["chunks_claimed_more_than_once"] = Chunk.objects.filter(
        batch_id__in=ids, attempts__gt=1
    ).count()
    return result


def figures_text(title: str, requests: dict, found: dict, extra: str = "") -> str:
    lines = [
        f"{title}: {requests['seconds']:.0f}s, {CLIENTS} clients, {CLUSTERS} qclusters x "
        f"{WORKERS} workers, gunicorn on PostgreSQL + Redis",
        f"requests {requests['requests']:,} ({requests['requests_per_s']:.1f}/s), "
        f"p50 {requests['p50_ms']:.0f} ms, p99 {requests['p99_ms']:.0f} ms, "
        f"5xx {requests['5xx']}, no answer {requests['no_answer']}, 429 {requests['429']}",
    ]
    for kind, figures in requests["by_kind"].items():
        lines.append(
            f"  {kind:<7} {figures['requests']:>7,}  p50 {figures['p50_ms']:>6.0f} ms  "
            f"p99 {figures['p99_ms']:>6.0f} ms  5xx {figures['5xx']}"
        )
    lines.append(
        f"batches {found['batches']} {found['by_status']}; items sent {found['items_sent']:,}, "
        f"stored {found['items_stored']:,}, lost {found['lost']}, duplicated "
        f"{found['duplicated']}, misplaced {found['misplaced']}, counter mismatches "
        f"{len(found['counter_mismatches'])}"
    )
    if "items_per_s" in found:
        lines.append(
            f"processed {found['items_stored']:,} items in {found['processing_seconds']:.1f}s "
            f"(first commit to last finish): {found['items_per_s']:,.0f} items/s"
        )
    lines.append(f"chunks claimed more than once {found['chunks_claimed_more_than_once']}")
    if extra:
        lines.append(extra)
    return "\n".join(lines)


def assert_nothing_lost(found: dict) -> None:
    assert found["batches"] > 0, "the clients made no batch"
    assert found["batches_in_db"] == found["batches"], "batches the clients did not make"
    assert not found["client_problems"], found["client_problems"][:10]
    assert set(found["by_status"]) == {Batch.Status.FINISHED}, found["by_status"]
    assert found["items_stored"] == found["items_sent"]
    assert found["lost"] == 0
    assert found["duplicated"] == 0
    assert found["misplaced"] == 0
    assert found["counter_mismatches"] == []
    assert found["unsucceeded_in_finished"] == 0


def test_load__20_clients_for_a_minute_lose_nothing_and_see_no_server_error(
    web_server, cluster_factory
):
    clusters = [cluster_factory(workers=WORKERS, env=PRODUCTION_SETTINGS) for _ in range(CLUSTERS)]

    recorder, elapsed = load_run(
        web_server=web_server, clusters=clusters, seconds=env_seconds("BATCHSITE_LOAD_SECONDS", 60)
    )
    wait_all_ended(recorder.batches, web_server=web_server, clusters=clusters)

    requests = request_figures(recorder.samples, elapsed)
    found = ledger(recorder.batches)
    figures_report(
        "load test figures",
        {"requests": requests, "ledger": found},
        figures_text("load", requests, found),
    )
    assert requests["5xx"] == 0, requests["by_kind"]
    assert requests["no_answer"] == 0, requests["by_kind"]
    assert_nothing_lost(found)


def test_fault__a_killed_cluster_and_cut_connections_lose_nothing(web_server, cluster_factory):
    clusters = [cluster_factory(workers=WORKERS, env=FAULT_SETTINGS) for _ in range(CLUSTERS)]
    seconds = env_seconds("BATCHSITE_FAULT_SECONDS", 40)
    happened: list[str] = []

    def faults(started: float) -> None:
        time.sleep(max(0.0, started + seconds * 0.3 - time.monotonic()))
        clusters[0].kill()  # the whole process group: sentinel, pusher, monitor, workers
        happened.append(f"killed qcluster {clusters[0].process.pid} with -9 at "
                        f"{time.monotonic() - started:.1f}s")  # fmt: skip
        clusters.append(cluster_factory(workers=WORKERS, env=FAULT_SETTINGS))
        time.sleep(max(0.0, started + seconds * 0.55 - time.monotonic()))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            (cut,) = cursor.fetchone()
        happened.append(
            f"terminated {cut} PostgreSQL connections at {time.monotonic() - started:.1f}s"
        )

    recorder, elapsed = load_run(
        web_server=web_server, clusters=clusters, seconds=seconds, faults=faults
    )
    wait_all_ended(recorder.batches, web_server=web_server, clusters=clusters)

    requests = request_figures(recorder.samples, elapsed)
    found = ledger(recorder.batches)
    figures_report(
        "fault test figures",
        {"requests": requests, "ledger": found, "faults": happened},
        figures_text("fault", requests, found, extra="; ".join(happened)),
    )
    assert len(happened) == 2, happened
    # Requests in flight when the connections were cut may fail with 5xx; the clients
    # retry them (reconciling items requests first), and the ledger must still balance.
    assert_nothing_lost(found)
