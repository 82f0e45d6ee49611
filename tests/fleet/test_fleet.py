"""batchsite as a fleet: a worker host cut off mid-batch, the other one finishes.

The hosts are network namespaces (tests/fleet/hosts.py) built by tests/fleet/conftest.py:
PostgreSQL and Redis on one, gunicorn on another, a worker cluster on each of two more,
each with its own data dir. Figures go to pytest's summary.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile

import httpx
import pytest

from tests.e2e.helpers import assert_never_concurrent, read_log
from tests.fleet.conftest import FIGURES, LEASE_SECONDS, Site
from tests.fleet.hosts import wait_until
from tests.helpers.files import zip_data

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(900)]

REQUEST_ITEMS = 10_000


def batch_submit(site: Site, *, type: str, count: int, payload: dict | None = None) -> str:
    """Create, fill and commit a batch of `count` items through the web host; return its id.

    Item n's payload is {"n": n} plus `payload`.
    """
    with site.client() as client:
        response = client.post("/batches/", json={"type": type})
        assert response.status_code == 201, response.text
        batch_id = response.json()["id"]
        for start in range(0, count, REQUEST_ITEMS):
            items = [
                {"external_id": f"e{n}", "payload": {"n": n, **(payload or {})}}
                for n in range(start, min(count, start + REQUEST_ITEMS))
            ]
            response = client.post(f"/batches/{batch_id}/items/", json=items)
            assert response.status_code == 201, response.text
        response = client.post(f"/batches/{batch_id}/commit/")
        assert response.status_code == 200, response.text
    return batch_id


def batch_read(site: Site, batch_id: str) -> dict:
    with site.client(timeout=10) as client:
        response = client.get(f"/batches/{batch_id}/")
        assert response.status_code == 200, response.text
        return response.json()


def assert_counters_equal_the_recount(site: Site, batch_id: str) -> dict[str, int]:
    rows = site.sql(
        "SELECT status, count(*) FROM batches_item WHERE batch_id = %s GROUP BY status",
        batch_id,
    )
    recount = {status: count for status, count in rows}
    counters = site.sql(
        "SELECT total_items, pending_items, queued_items, running_items, succeeded_items, "
        "failed_items, cancelled_items FROM batches_batch WHERE id = %s",
        batch_id,
    )[0]
    statuses = ["pending", "queued", "running", "succeeded", "failed", "cancelled"]
    assert counters[0] == sum(recount.values())
    assert dict(zip(statuses, counters[1:], strict=True)) == {
        status: recount.get(status, 0) for status in statuses
    }
    return recount


def test_fleet__a_worker_host_cut_off_mid_batch_loses_nothing_and_runs_nothing_twice_at_once(
    site: Site,
):
    count = 50_000
    site.exec_log.write_text("")
    batch_id = batch_submit(site, type="test.record", count=count, payload={"sleep_ms": 2})
    committed = time.monotonic()

    # Both worker hosts run chunks of the batch; once a fifth is done, w1 is cut off while
    # it holds one.
    def w1_holds_a_chunk() -> bool:
        held = site.sql(
            "SELECT count(*) FROM batches_chunk WHERE batch_id = %s AND status = 'running' "
            "AND lease_owner LIKE 'w1:%%'",
            batch_id,
        )
        ran = site.sql(
            "SELECT count(*) FROM batches_chunk WHERE batch_id = %s AND lease_owner LIKE 'w2:%%'",
            batch_id,
        )
        done = site.sql("SELECT succeeded_items FROM batches_batch WHERE id = %s", batch_id)
        return held[0][0] > 0 and ran[0][0] > 0 and done[0][0] >= count // 5

    wait_until("both worker hosts running the batch", w1_holds_a_chunk, timeout=300, every=0.05)
    before_cut = batch_read(site, batch_id)
    both_rate = before_cut["counts"]["succeeded"] / (time.monotonic() - committed)
    assert before_cut["status"] == "running"
    held = [
        row[0]
        for row in site.sql(
            "SELECT id FROM batches_chunk WHERE batch_id = %s AND status = 'running' "
            "AND lease_owner LIKE 'w1:%%'",
            batch_id,
        )
    ]
    site.fleet.cut(site.workers["w1"])
    cut = time.monotonic()
    try:
        wait_until(
            "w1's chunks taken over",
            lambda: (
                not site.sql(
                    "SELECT id FROM batches_chunk WHERE id = ANY(%s) AND lease_owner LIKE 'w1:%%' "
                    "AND status = 'running'",
                    held,
                )
            ),
            timeout=300,
            every=0.2,
        )
        taken_over = time.monotonic() - cut
        finished = wait_until(
            "the batch finished by w2 alone",
            lambda: (b := batch_read(site, batch_id))["status"] == "finished" and b,
            timeout=300,
            every=0.5,
        )
        recovered = time.monotonic() - cut
    finally:
        site.fleet.restore(site.workers["w1"])

    # Back on the network, w1 finds out. Items of 2 ms keep a worker out of a transaction
    # most of the time, so it was most likely running items when it was cut off: its next
    # slice write reaches the database now, finds its lease taken over, and writes
    # nothing. If it was cut off inside a transaction instead, the database ended that
    # session (idle_in_transaction_session_timeout) and rolled it back; either way nothing
    # it did after its lease ran out is written, which the checks below prove.
    w1_log = site.root / "w1.log"
    postgres_log = site.root / "postgres.log"
    refusal = wait_until(
        "w1's late writes refused",
        lambda: (
            ("lease check" if "lease lost" in w1_log.read_text() else "")
            or (
                "session ended" if "idle-in-transaction timeout" in postgres_log.read_text() else ""
            )
        ),
        timeout=180,
        every=1,
    )
    assert finished["counts"]["succeeded"] == count
    recount = assert_counters_equal_the_recount(site, batch_id)
    assert recount == {"succeeded": count}
    attempts = site.sql(
        "SELECT attempts, count(*) FROM batches_item WHERE batch_id = %s GROUP BY attempts",
        batch_id,
    )
    assert attempts == [(1, count)]
    runs = read_log(site.exec_log)
    assert sorted(runs) == list(range(count))
    assert_never_concurrent(runs)
    rerun = sum(len(ran) - 1 for ran in runs.values())
    FIGURES.append(
        f"fleet partition: {count:,} test.record items; both worker hosts "
        f"{both_rate:,.0f} items/s; w1 cut off at {before_cut['counts']['succeeded']:,} done; "
        f"its {len(held)} chunk(s) taken over by w2 {taken_over:.1f} s after the cut (lease "
        f"{LEASE_SECONDS} s); w2 finished the batch {recovered:.1f} s after the cut; "
        f"{rerun} item(s) run again; w1's late writes refused by the {refusal}"
    )


def test_fleet__documents_uploaded_to_the_web_host_are_signed_on_the_worker_hosts(site: Site):
    documents = {f"doc-{n:03}.txt": f"document {n}\n".encode() * 300 for n in range(300)}
    started = time.monotonic()
    with site.client() as client:
        response = client.post("/batches/", json={"type": "document.sign"})
        assert response.status_code == 201, response.text
        batch_id = response.json()["id"]
        response = client.post(
            f"/batches/{batch_id}/upload/",
            content=zip_data(documents),
            headers={"Content-Type": "application/zip"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["added"] == len(documents)
        assert client.post(f"/batches/{batch_id}/commit/").status_code == 200
        finished = wait_until(
            "the signing batch finished",
            lambda: (b := batch_read(site, batch_id))["status"] in ("finished", "failed") and b,
            timeout=300,
            every=0.5,
        )
        took = time.monotonic() - started
        assert finished["counts"]["succeeded"] == len(documents), finished
        # The package is built into the bucket; the client fetches it from the storage host.
        response = client.get(f"/batches/{batch_id}/package/")
        assert response.status_code == 302, response.text
        location = response.headers["location"]
        assert location.startswith(f"http://{site.storage.address}:9000/")
    package = httpx.get(location, timeout=60)
    assert package.status_code == 200

    archive = zipfile.ZipFile(io.BytesIO(package.content))
    manifest = json.loads(archive.read("manifest.json"))
    by_name = {entry["name"]: entry for entry in manifest["files"]}
    assert set(by_name) == set(documents) | {f"{name}.p7s" for name in documents}
    for name, entry in by_name.items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == entry["sha256"], name
    for name, data in documents.items():
        assert archive.read(name) == data
    assert_counters_equal_the_recount(site, batch_id)
    # Every file went to the bucket: no host kept one in its data dir.
    for host in ("web", "w1", "w2"):
        kept = [p for p in (site.root / host).rglob("*") if p.is_file() and "batches" in p.parts]
        assert kept == [], f"{host} kept {kept[:3]}"
    FIGURES.append(
        f"fleet signing: {len(documents)} documents in one ZIP, uploaded, signed on the "
        f"worker hosts and packaged from the bucket in {took:.1f} s"
    )


def test_fleet__a_rolling_restart_of_both_worker_hosts_loses_nothing_and_reruns_nothing(
    site: Site,
):
    count = 50_000
    site.exec_log.write_text("")
    batch_id = batch_submit(site, type="test.record", count=count, payload={"sleep_ms": 1})
    stops = []
    for name in ("w1", "w2"):
        done_before = batch_read(site, batch_id)["counts"]["succeeded"]
        wait_until(
            f"progress before {name} restarts",
            lambda done_before=done_before: (
                batch_read(site, batch_id)["counts"]["succeeded"] >= done_before + count // 5
            ),
            timeout=300,
            every=0.2,
        )
        old = site.clusters[name]
        asked = time.monotonic()
        returncode = site.workers[name].stop(old)
        stops.append(time.monotonic() - asked)
        assert returncode == 0, f"{name}'s cluster exited with {returncode}"
        # Its chunks went back at once: none is left leased to the stopped host.
        held = site.sql(
            "SELECT count(*) FROM batches_chunk WHERE batch_id = %s AND status = 'running' "
            "AND lease_owner LIKE %s",
            batch_id,
            f"{name}:%",
        )
        assert held == [(0,)]
        site.cluster_start(name)
    finished = wait_until(
        "the batch finished after the rolling restart",
        lambda: (b := batch_read(site, batch_id))["status"] == "finished" and b,
        timeout=300,
        every=0.5,
    )

    assert finished["counts"]["succeeded"] == count
    assert assert_counters_equal_the_recount(site, batch_id) == {"succeeded": count}
    runs = read_log(site.exec_log)
    assert sorted(runs) == list(range(count))
    assert [n for n, ran in runs.items() if len(ran) > 1] == []
    FIGURES.append(
        f"fleet rolling restart: {count:,} test.record items of 1 ms; SIGTERM to exit "
        f"{', '.join(f'{s:.1f} s' for s in stops)}; every item run exactly once"
    )
