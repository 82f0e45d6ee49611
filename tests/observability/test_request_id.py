"""Tests for request ids: the header, problem documents, log lines, events and engine lines."""

from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from batches.engine import sweep
from batches.models import Batch, BatchEvent, Chunk
from batchsite.logging import JsonFormatter, RequestIdFilter, logging_config
from batchsite.requestid import HEADER
from tests.conftest import wait_for
from tests.e2e.helpers import wait_terminal
from tests.helpers.api import batch_url

CRASHING = [{"payload": {"n": 0}}, {"payload": {"crash": True}}]


def with_id(request_id: str) -> dict:
    """Return test-client keyword arguments that send `request_id` as X-Request-ID."""
    return {"HTTP_X_REQUEST_ID": request_id}


def is_uuid4(value: str) -> bool:
    try:
        return uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value
    except ValueError:
        return False


@pytest.fixture
def request_ids(caplog):
    """Give caplog's records their request id, as the console handler's filter does."""
    request_filter = RequestIdFilter()
    caplog.handler.addFilter(request_filter)
    yield caplog
    caplog.handler.removeFilter(request_filter)


@pytest.fixture
def metrics_refused(settings, db):
    """Make /metrics/ refuse a request without the token: Django logs the 401."""
    settings.BATCHSITE_METRICS_TOKEN = "not-sent"


# --- the header ------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", ["0b5c3e52-6f0e-4a39-9d55-0ad0c1b1e0f1", "trace.42_A-b", "x" * 64])
def test_request_id__a_sane_client_id_is_sent_back(client_a, sent):
    response = client_a.get("/api/v1/job-types/", **with_id(sent))

    assert response.status_code == 200
    assert response[HEADER] == sent


def test_request_id__made_when_the_client_sends_none(client_a, client):
    first = client_a.get("/api/v1/job-types/")
    second = client.get("/healthz/")

    assert is_uuid4(first[HEADER])
    assert is_uuid4(second[HEADER])
    assert first[HEADER] != second[HEADER]


@pytest.mark.parametrize("sent", ["", "two words", "x" * 65, "<script>", "a/b", "ü"])
def test_request_id__an_unsafe_client_id_is_replaced(client_a, sent):
    response = client_a.get("/api/v1/job-types/", **with_id(sent))

    assert response[HEADER] != sent
    assert is_uuid4(response[HEADER])


# --- problem documents -----------------------------------------------------------------------


def test_problem__instance_is_the_urn_of_a_made_id(client_a):
    response = client_a.get(f"/api/v1/batches/{uuid.uuid4()}/")

    body = response.json()
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert body["request_id"] == response[HEADER]
    assert body["instance"] == f"urn:uuid:{response[HEADER]}"


def test_problem__instance_names_a_client_token_with_the_path(client_a, account):
    batch_id = uuid.uuid4()

    response = client_a.post(
        f"/api/v1/batches/{batch_id}/commit/", format="json", **with_id("client-7")
    )

    body = response.json()
    assert response.status_code == 404
    assert body["request_id"] == "client-7"
    assert body["instance"] == f"/api/v1/batches/{batch_id}/commit/?request_id=client-7"


def test_problem__a_refusal_that_changes_nothing_still_names_its_request(client_a, db):
    sent = str(uuid.uuid4())

    response = client_a.post("/api/v1/batches/", {"type": 7}, format="json", **with_id(sent))

    assert response.status_code == 400
    assert response.json()["instance"] == f"urn:uuid:{sent}"
    assert not Batch.objects.exists()


def test_dialect_error__keeps_its_own_body_and_gets_the_header(client, db):
    response = client.get("/compat/brightlocal/no-such-thing", **with_id("dialect-1"))

    assert response.status_code == 404
    assert response[HEADER] == "dialect-1"
    assert "instance" not in response.json()


# --- log lines -------------------------------------------------------------------------------


def test_log_lines__of_a_request_carry_its_id(client_a, account, request_ids):
    batch = client_a.post("/api/v1/batches/", {"items": CRASHING[:1]}, format="json").json()

    with request_ids.at_level(logging.INFO, logger="batches"):
        response = client_a.delete(f"/api/v1/batches/{batch['id']}/", **with_id("delete-9"))

    assert response.status_code == 204
    (record,) = [r for r in request_ids.records if "deleted by" in r.getMessage()]
    assert record.request_id == "delete-9"
    assert json.loads(JsonFormatter().format(record))["request_id"] == "delete-9"
    plain = logging_config(log_format="plain", batches_level="INFO", q_level="INFO")
    line = logging.Formatter(plain["formatters"]["plain"]["format"]).format(record)
    assert "batches.services.retention [delete-9] batch " in line


def test_log_lines__django_refusal_line_written_after_the_middleware_carries_the_id(
    client, metrics_refused, request_ids
):
    with request_ids.at_level(logging.WARNING, logger="django.request"):
        response = client.get("/metrics/", **with_id("refused-8"))

    assert response.status_code == 401
    (record,) = [r for r in request_ids.records if r.name == "django.request"]
    assert record.request_id == "refused-8"


def test_log_lines__outside_a_request_carry_none():
    record = logging.LogRecord("batches", logging.INFO, __file__, 1, "idle", (), None)

    RequestIdFilter().filter(record)

    assert record.request_id == ""
    assert "request_id" not in json.loads(JsonFormatter().format(record))


def test_log_lines__gunicorn_access_line_takes_the_response_header():
    # gunicorn writes its access line after the response, with its headers in the args.
    atoms = {"h": "127.0.0.1", "s": "200", "{x-request-id}o": "from-response"}
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(h)s", atoms, None)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())

    handler.handle(record)

    assert json.loads(stream.getvalue())["request_id"] == "from-response"


# --- batches and events ----------------------------------------------------------------------


def test_events__record_the_ids_of_the_requests_that_created_and_committed(
    client_a, account, django_capture_on_commit_callbacks
):
    created = client_a.post(
        "/api/v1/batches/", {"items": CRASHING[:1]}, format="json", **with_id("create-1")
    ).json()
    batch = Batch.objects.get(pk=created["id"])
    with django_capture_on_commit_callbacks(execute=False):
        client_a.post(batch_url(batch, "commit/"), **with_id("commit-2"))

    events = client_a.get(batch_url(batch, "events/")).json()["results"]

    ids = {event["kind"]: event["request_id"] for event in events}
    assert ids == {"created": "create-1", "items_added": "create-1", "committed": "commit-2"}
    batch.refresh_from_db()
    assert batch.request_id == "commit-2"


def crash_records(caplog, batch_id) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if "crashed" in r.getMessage() and getattr(r, "batch", None) == str(batch_id)
    ]


def test_engine__log_lines_carry_the_committing_requests_id(
    client_a, account, request_ids, django_capture_on_commit_callbacks
):
    created = client_a.post(
        "/api/v1/batches/", {"items": CRASHING, "type": "test.flaky"}, format="json"
    ).json()
    # The chunk runs after the request, as a worker would run it.
    with (
        request_ids.at_level(logging.WARNING, logger="batches.engine"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        client_a.post(f"/api/v1/batches/{created['id']}/commit/", **with_id("commit-3"))

    (record,) = crash_records(request_ids, created["id"])
    assert record.request_id == "commit-3"
    assert json.loads(JsonFormatter().format(record))["request_id"] == "commit-3"


def test_engine__a_chunk_the_sweep_queues_again_keeps_the_id(
    client_a, account, request_ids, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):  # the chunk's task is lost
        created = client_a.post(
            "/api/v1/batches/",
            {"items": CRASHING, "type": "test.flaky", "commit": True},
            format="json",
            **with_id("lost-4"),
        ).json()
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Chunk.objects.filter(batch_id=created["id"]).update(enqueued_at=an_hour_ago)

    with (
        request_ids.at_level(logging.WARNING, logger="batches.engine"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert sweep.chunks_requeue(timezone.now()) == 1

    (record,) = crash_records(request_ids, created["id"])
    assert record.request_id == "lost-4"
    assert Batch.objects.get(pk=created["id"]).is_terminal


def test_rerun__records_its_request_and_the_engine_uses_it(
    client_a, account, request_ids, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        created = client_a.post(
            "/api/v1/batches/",
            {"items": CRASHING, "type": "test.flaky", "commit": True},
            format="json",
            **with_id("first-5"),
        ).json()
    batch = Batch.objects.get(pk=created["id"])
    request_ids.clear()

    with (
        request_ids.at_level(logging.WARNING, logger="batches.engine"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        client_a.post(
            batch_url(batch, "rerun/"), {"items": "failed"}, format="json", **with_id("rerun-6")
        )

    (record,) = crash_records(request_ids, batch.pk)
    assert record.request_id == "rerun-6"
    kinds = dict(BatchEvent.objects.filter(batch=batch).values_list("kind", "request_id"))
    assert kinds["rerun"] == "rerun-6"


# --- a real cluster --------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_cluster__engine_log_line_carries_the_committing_requests_id_and_workers_are_counted(
    client_a, client, cluster_factory, settings
):
    cluster = cluster_factory(env={"BATCHSITE_LOG_FORMAT": "json"})
    created = client_a.post(
        "/api/v1/batches/", {"items": CRASHING, "type": "test.flaky"}, format="json"
    ).json()
    client_a.post(f"/api/v1/batches/{created['id']}/commit/", **with_id("cluster-commit-7"))

    wait_terminal(created["id"], cluster)

    entries = []
    for line in cluster.output().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    crashed = [e for e in entries if "crashed" in e["message"] and e.get("batch") == created["id"]]
    assert len(crashed) == 1, cluster.output()[-3000:]
    assert crashed[0]["request_id"] == "cluster-commit-7"
    assert crashed[0]["item"] == 1

    settings.BATCHSITE_METRICS_TOKEN = "cluster-metrics"

    def workers() -> dict:
        response = client.get("/metrics/", HTTP_AUTHORIZATION="Bearer cluster-metrics")
        families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
        samples = families["batchsite_workers"].samples if "batchsite_workers" in families else []
        return {s.labels["cluster"]: s.value for s in samples}

    # Clusters of earlier tests may linger in the shared cache for a while, stopped.
    wait_for(lambda: cluster.workers in workers().values(), timeout=60)
