"""The benchmark report: how the scale-out scenario's rounds are compared and printed.

And the lock-wait sampler, against real PostgreSQL backends blocked on a real row lock.
"""

from __future__ import annotations

import threading
import time

import pytest

from batchsite.bench import harness, scenarios
from batchsite.bench.lockwait import LockWaitSampler, lock_waits_sampled
from tests.conftest import database_url, wait_for

# Any committed row every test database has will do for a row lock.
LOCK_A_ROW = "SELECT id FROM django_migrations ORDER BY id LIMIT 1 FOR UPDATE"


def scale_out_result() -> dict:
    return {
        "items": 200_000,
        "seconds": 20.0,
        "items_per_s": 10_000.0,
        "clusters": {
            "1": {"seconds": 20.0, "items_per_s": 10_000.0, "vs_1_cluster": 1.0},
            "2": {"seconds": 12.5, "items_per_s": 16_000.0, "vs_1_cluster": 1.6},
            "3": {"seconds": 10.0, "items_per_s": 20_000.0, "vs_1_cluster": 2.0},
        },
    }


def test_ratios__scale_out_compares_each_cluster_count_with_one():
    found = harness.ratios({"scale-out": scale_out_result()})

    assert found == {
        "scale-out 2 clusters / 1 cluster (items/s)": 1.6,
        "scale-out 3 clusters / 1 cluster (items/s)": 2.0,
    }


def test_format_table__scale_out_lists_every_round():
    report = {
        "database": "postgres",
        "broker": "redis",
        "items": 200_000,
        "clusters": 1,
        "workers": 2,
        "scenarios": {"scale-out": scale_out_result()},
        "ratios": harness.ratios({"scale-out": scale_out_result()}),
    }

    table = harness.format_table(report)

    assert "1 cluster(s) 10,000/s; 2 cluster(s) 16,000/s; 3 cluster(s) 20,000/s" in table
    assert "scale-out 3 clusters / 1 cluster (items/s): 2.00x" in table


def test_scale_out__is_run_only_when_asked_for():
    assert "scale-out" in scenarios.EXTRA_SCENARIOS
    assert "scale-out" not in scenarios.SCENARIOS


def report_of(result: dict) -> dict:
    return {
        "database": "postgres",
        "broker": "redis",
        "items": result["items"],
        "clusters": 1,
        "workers": 2,
        "scenarios": {"scale-out": result},
        "ratios": harness.ratios({"scale-out": result}),
    }


def test_format_table__scale_out_prints_each_rounds_lock_wait_shares():
    result = scale_out_result()
    result["clusters"]["1"].update(lock_wait_share=0.02, lock_wait_share_of_active=0.1)
    result["clusters"]["2"].update(lock_wait_share=0.25, lock_wait_share_of_active=0.5)
    result["clusters"]["3"].update(lock_wait_share=None, lock_wait_share_of_active=None)

    table = harness.format_table(report_of(result))

    assert "lock wait (sampled every 20 ms)" in table
    assert (
        "1 cluster(s)    10,000  1.00x  2.0% of worker connection time, 10.0% of active time"
        in table
    )
    assert (
        "2 cluster(s)    16,000  1.60x  25.0% of worker connection time, 50.0% of active time"
        in table
    )
    assert "3 cluster(s)    20,000  2.00x  n/a (no worker connection seen)" in table


def test_format_table__scale_out_without_lock_figures_has_no_lock_wait_lines():
    table = harness.format_table(report_of(scale_out_result()))

    assert "lock wait" not in table


@pytest.fixture
def pg_connect(db):
    """Return a function that opens raw connections to the test database; close them after."""
    import psycopg
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the lock-wait sampler reads pg_stat_activity: set DATABASE_URL=postgres://...")
    opened: list[psycopg.Connection] = []

    def connect() -> psycopg.Connection:
        opened.append(psycopg.connect(database_url()))
        return opened[-1]

    yield connect
    for conn in opened:
        conn.close()


def backend_state(pid: int) -> tuple[str, str | None]:
    """Return the state and wait event type of a backend as the server sees it now."""
    from django.db import connection

    with connection.cursor() as cursor:
        # The test runs in a transaction, and pg_stat_activity is cached for one.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()


def sample_for(seconds: float) -> LockWaitSampler:
    sampler = LockWaitSampler().start()
    time.sleep(seconds)
    sampler.stop()
    return sampler


def test_lock_wait_sampler__counts_a_backend_blocked_on_a_row_lock(pg_connect):
    holder, waiter = pg_connect(), pg_connect()
    holder.execute(LOCK_A_ROW)
    waiter.execute("SET lock_timeout = '30s'")
    blocked = threading.Thread(target=waiter.execute, args=[LOCK_A_ROW])
    blocked.start()
    try:
        wait_for(lambda: backend_state(waiter.info.backend_pid) == ("active", "Lock"), timeout=10)
        sampler = sample_for(0.3)
    finally:
        holder.rollback()
        blocked.join()
        waiter.rollback()

    # Two backends in every sample: the holder idle in its transaction, the waiter blocked.
    assert sampler.samples >= 5
    assert sampler.waiting_samples == sampler.samples
    assert sampler.figures() == {"lock_wait_share": 0.5, "lock_wait_share_of_active": 1.0}


def test_lock_wait_sampler__a_backend_busy_without_a_lock_wait_counts_none(pg_connect):
    holder, sleeper = pg_connect(), pg_connect()
    holder.execute(LOCK_A_ROW)
    busy = threading.Thread(target=sleeper.execute, args=["SELECT pg_sleep(1)"])
    busy.start()
    try:
        wait_for(lambda: backend_state(sleeper.info.backend_pid)[0] == "active", timeout=10)
        sampler = sample_for(0.3)
    finally:
        busy.join()
        holder.rollback()

    assert sampler.samples >= 5
    assert sampler.active_samples == sampler.samples
    assert sampler.figures() == {"lock_wait_share": 0.0, "lock_wait_share_of_active": 0.0}


def test_lock_waits_sampled__on_sqlite_adds_no_figures(db):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("checks the SQLite run; PostgreSQL runs are sampled (tests above)")

    with lock_waits_sampled() as figures:
        pass

    assert figures == {}
