"""Tests for batchsite.observability (metrics) and batchsite.logging."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django.utils import timezone
from django_q.brokers import get_broker
from prometheus_client.parser import text_string_to_metric_families

from batches import engine, services
from batches.models import Batch, Item
from batches.tallies import tally_batch_end
from batchsite.logging import JsonFormatter
from tests.conftest import ROOT
from tests.factories import BatchFactory, ItemFactory, WebhookDeliveryFactory

TOKEN = "metrics-token-for-tests"
ZERO = timedelta(0)


@pytest.fixture
def metrics_token(settings):
    settings.BATCHSITE_METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client: Client, **headers) -> dict:
    """GET /metrics/ and return its samples as {(name, sorted labels): value}."""
    response = client.get("/metrics/", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


# --- metrics: who may read them -------------------------------------------------------------


@pytest.mark.django_db
def test_metrics__refused_without_credentials(client, metrics_token):
    response = client.get("/metrics/")

    assert response.status_code == 401
    assert response["Content-Type"].startswith("text/plain")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"batchsite_" not in response.content


@pytest.mark.django_db
def test_metrics__refused_with_a_wrong_token(client, metrics_token):
    response = client.get("/metrics/", **bearer("not-" + TOKEN))

    assert response.status_code == 401


@pytest.mark.django_db
def test_metrics__served_with_the_token(client, metrics_token):
    samples = scrape(client, **bearer(TOKEN))

    assert ("batchsite_batches", (("status", "running"),)) in samples


@pytest.mark.django_db
def test_metrics__served_to_a_staff_session(staff_client):
    samples = scrape(staff_client)

    assert ("batchsite_queue_depth", ()) in samples


@pytest.mark.django_db
def test_metrics__forbidden_to_a_session_that_is_not_staff(client, metrics_token):
    user = get_user_model().objects.create_user("plain", password="pw")
    client.force_login(user)

    response = client.get("/metrics/")

    assert response.status_code == 403
    assert b"batchsite_" not in response.content


@pytest.mark.django_db
def test_metrics__empty_token_setting_admits_no_token(client, settings):
    settings.BATCHSITE_METRICS_TOKEN = ""

    assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert client.get("/metrics/", **bearer("anything")).status_code == 401


# --- metrics: values -------------------------------------------------------------------------


def ended_item(batch, *, type="echo", status=Item.Status.SUCCEEDED, took=None, ended_ago=ZERO):
    """Create an item of `batch` that ended `ended_ago` ago after running `took` seconds."""
    finished = timezone.now() - ended_ago
    started = finished - timedelta(seconds=took) if took is not None else None
    return ItemFactory(
        batch=batch, type=type, status=status, started_at=started, finished_at=finished
    )


@pytest.fixture
def history(db):
    """Batches in several states with items of two types that ended at known times."""
    now = timezone.now()
    running = BatchFactory(status=Batch.Status.RUNNING, started_at=now - timedelta(minutes=10))
    BatchFactory(status=Batch.Status.RUNNING, started_at=now - timedelta(minutes=2))
    recent = BatchFactory(status=Batch.Status.FINISHED, finished_at=now - timedelta(minutes=5))
    old = BatchFactory(status=Batch.Status.FINISHED, finished_at=now - timedelta(hours=3))
    BatchFactory(status=Batch.Status.OPEN)
    BatchFactory(status=Batch.Status.OPEN)
    BatchFactory(status=Batch.Status.OPEN)

    ended_item(running, took=0.003)
    ended_item(running, took=0.2)
    ended_item(running, type="http.request", status=Item.Status.FAILED, took=3)
    ended_item(running, type="http.request", took=400)
    ItemFactory(batch=running, status=Item.Status.RUNNING, started_at=now)
    ItemFactory(batch=running, status=Item.Status.QUEUED)
    # Ended two hours ago, before the running batch was re-run.
    ended_item(running, took=5, ended_ago=timedelta(hours=2))
    ended_item(recent, took=1, ended_ago=timedelta(minutes=5))
    # Cancelled before it started: processed, but without a duration.
    ended_item(recent, status=Item.Status.CANCELLED)
    # Ended outside the hour the histogram covers.
    ended_item(old, took=2, ended_ago=timedelta(hours=3))
    ended_item(
        old, type="http.request", status=Item.Status.FAILED, took=2, ended_ago=timedelta(hours=3)
    )
    return running


def expected_batches() -> dict[str, int]:
    counted = dict.fromkeys(Batch.Status.values, 0)
    for status in Batch.objects.values_list("status", flat=True):
        counted[status] += 1
    return counted


def test_metrics__batches_by_status_equal_the_database(client, metrics_token, history):
    samples = scrape(client, **bearer(TOKEN))

    exposed = {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "batchsite_batches"
    }
    assert exposed == expected_batches()
    assert exposed["running"] == 2
    assert exposed["open"] == 3


def test_metrics__queue_depth_is_the_brokers_queue_size(client, metrics_token, db):
    broker = get_broker()
    broker.enqueue("first")
    broker.enqueue("second")

    samples = scrape(client, **bearer(TOKEN))

    assert broker.queue_size() == 2
    assert samples[("batchsite_queue_depth", ())] == 2


def test_metrics__oldest_running_batch_age(client, metrics_token, history):
    samples = scrape(client, **bearer(TOKEN))

    oldest = Batch.objects.filter(status=Batch.Status.RUNNING).order_by("started_at").first()
    age = samples[("batchsite_oldest_running_batch_age_seconds", ())]
    assert oldest == history
    assert age >= 600
    assert age <= (timezone.now() - oldest.started_at).total_seconds()


def test_metrics__oldest_running_batch_age_is_zero_when_none_runs(client, metrics_token, db):
    BatchFactory(status=Batch.Status.FINISHED, started_at=timezone.now() - timedelta(hours=1))

    samples = scrape(client, **bearer(TOKEN))

    assert samples[("batchsite_oldest_running_batch_age_seconds", ())] == 0


def test_metrics__query_count_does_not_grow_with_the_data(
    client, metrics_token, history, django_assert_max_num_queries
):
    # Batches, tallies, active batches' ended items, webhook deliveries; the ORM broker's
    # queue size.
    with django_assert_max_num_queries(5):
        scrape(client, **bearer(TOKEN))

    for n in range(20):
        batch = BatchFactory(status=Batch.Status.RUNNING, started_at=timezone.now())
        for t in range(3):
            ended_item(batch, type=f"type-{n}-{t}", took=n + t)
        ended = BatchFactory(status=Batch.Status.FINISHED, finished_at=timezone.now())
        ended_item(ended, type=f"type-{n}", took=n)
        tally_batch_end(batch_id=ended.pk)
        WebhookDeliveryFactory(batch=ended)

    with django_assert_max_num_queries(5):
        samples = scrape(client, **bearer(TOKEN))
    assert samples[("batchsite_batches", (("status", "running"),))] == 22
    assert (
        samples[
            ("batchsite_items_processed_total", (("outcome", "succeeded"), ("type", "type-19")))
        ]
        == 1
    )


# --- JSON logs -------------------------------------------------------------------------------


def test_json_formatter__writes_one_object_with_batch_and_item():
    record = logging.LogRecord(
        "batches.engine", logging.WARNING, __file__, 1, "item %s crashed", ("b#7",), None
    )
    record.batch = "0b5c3e52-6f0e-4a39-9d55-0ad0c1b1e0f1"
    record.item = 7

    line = JsonFormatter().format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "batches.engine"
    assert entry["message"] == "item b#7 crashed"
    assert entry["batch"] == "0b5c3e52-6f0e-4a39-9d55-0ad0c1b1e0f1"
    assert entry["item"] == 7
    assert "chunk" not in entry
    assert entry["time"].endswith("+00:00")


def test_json_formatter__through_a_logger_with_extra_and_an_exception():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.observability.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError("bad value")
        except ValueError:
            log.error("chunk %s failed", 12, exc_info=True, extra={"chunk": 12, "batch": "b"})
    finally:
        log.removeHandler(handler)

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["message"] == "chunk 12 failed"
    assert entry["chunk"] == 12
    assert entry["batch"] == "b"
    assert "ValueError: bad value" in entry["exception"]


def test_log_format_setting__json_makes_the_console_write_json_lines():
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('batches.engine').warning('hello %s', 'there', "
        "extra={'batch': 'b-1', 'item': 3})"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "BATCHSITE_LOG_FORMAT": "json"}

    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )

    entry = json.loads(done.stderr.strip().splitlines()[-1])
    assert entry == {
        "time": entry["time"],
        "level": "WARNING",
        "logger": "batches.engine",
        "message": "hello there",
        "batch": "b-1",
        "item": 3,
    }


def test_log_format_setting__refuses_an_unknown_format():
    env = {**os.environ, "BATCHSITE_LOG_FORMAT": "xml"}

    done = subprocess.run(
        [sys.executable, "-c", "import batchsite.settings"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )

    assert done.returncode != 0
    assert "BATCHSITE_LOG_FORMAT" in done.stderr


# --- engine log lines carry the batch and the item ------------------------------------------


def test_engine__crashed_item_log_line_carries_batch_and_item(
    account, caplog, django_capture_on_commit_callbacks
):
    items = [{"payload": {"n": 0}}, {"payload": {"crash": True}}, {"payload": {"n": 2}}]
    with (
        caplog.at_level(logging.WARNING, logger="batches.engine"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        batch, _ = services.batch_create(
            account=account, actor="test", type="test.flaky", items=items, commit=True
        )

    crashed = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crashed) == 1
    assert crashed[0].batch == str(batch.pk)
    assert crashed[0].item == 1
    assert json.loads(JsonFormatter().format(crashed[0]))["item"] == 1


def test_engine__finalize_warning_carries_the_batch(
    account, caplog, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        batch, _ = services.batch_create(
            account=account, actor="test", items=[{"payload": {}}] * 3, commit=True
        )

    with caplog.at_level(logging.WARNING, logger="batches.engine"), transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        engine.batch_finalize(batch=locked)

    unfinished = [r for r in caplog.records if "unfinished" in r.getMessage()]
    assert len(unfinished) == 1
    assert unfinished[0].batch == str(batch.pk)
