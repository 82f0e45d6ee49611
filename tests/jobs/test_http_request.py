"""Tests for the `http.request` job type.

Requests go to a real HTTP server on loopback (pytest-httpserver, reached as `localhost`).
Hosts that must never be contacted (example.com) are refused before any connection is made.
"""

from __future__ import annotations

import base64
import json
import os
import threading

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from batches import engine, services
from batches.models import Item
from jobs import JobContext, PermanentError, TransientError, get_job_type, http_request
from jobs.base import PayloadError
from jobs.http_request import HttpRequest
from tests.helpers import refused_port
from tests.helpers.api import BATCHES, assert_problem, error_fields

TYPE_PATH = "jobs.http_request.HttpRequest"
LOCAL = {"url": "http://localhost/"}


@pytest.fixture(autouse=True)
def _registered(settings):
    settings.BATCHSITE_JOB_TYPES = [*settings.BATCHSITE_JOB_TYPES, TYPE_PATH]
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]


@pytest.fixture
def job() -> HttpRequest:
    return HttpRequest()


@pytest.fixture
def backoffs(monkeypatch) -> list[int]:
    """Record retry backoffs instead of sleeping through them."""
    calls: list[int] = []

    def backoff(job_type, attempts):
        calls.append(attempts)
        return 0

    monkeypatch.setattr(engine.ItemRunner, "backoff", staticmethod(backoff))
    return calls


def run(job: HttpRequest, payload: dict, attempt: int = 1):
    return job.process(payload, None, JobContext(attempt=attempt, label="test#0"))


# --- payload_check ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"method": "POST", "json": {"a": [1, 2]}},
        {"method": "put", "body": "raw text"},
        {"method": "DELETE", "json": None},
        {"method": "HEAD"},
        {"method": "PATCH", "headers": {"X-Api-Key": "k", "Accept": "application/json"}},
        {"timeout": 0.5},
        {"timeout": 60},
        {"expect_status": 404},
        {"expect_status": [200, 201, 204]},
    ],
)
def test_http_request_validate_payload__accepts(job, httpserver, extra):
    assert job.payload_check({"url": httpserver.url_for("/x"), **extra}) is None


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        pytest.param({}, "payload.url", "is required", id="url-missing"),
        pytest.param({"url": 5}, "payload.url", "must be a string", id="url-int"),
        pytest.param({"url": ""}, "payload.url", "non-empty string", id="url-empty"),
        pytest.param({"url": "ftp://localhost/x"}, "payload.url", "only http", id="url-ftp"),
        pytest.param({"url": "localhost/x"}, "payload.url", "only http", id="url-no-scheme"),
        pytest.param(
            {"url": "http://example.com/"}, "payload.url", "not in BATCHSITE_OUTBOUND", id="host"
        ),
        pytest.param({**LOCAL, "method": "FETCH"}, "payload.method", "one of", id="m"),
        pytest.param({**LOCAL, "method": 1}, "payload.method", "must be a string", id="m1"),
        pytest.param({**LOCAL, "headers": ["X: 1"]}, "payload.headers", "object", id="h"),
        pytest.param(
            {**LOCAL, "headers": {"X-N": 1}},
            'payload.headers["X-N"]',
            "must be a string",
            id="header-int",
        ),
        pytest.param(
            {**LOCAL, "headers": {"X-N": "a\r\nHost: evil"}},
            'payload.headers["X-N"]',
            "printable ASCII",
            id="header-newline",
        ),
        pytest.param(
            {**LOCAL, "headers": {"Bad Name": "x"}},
            'payload.headers["Bad Name"]',
            "not a valid header name",
            id="header-name",
        ),
        pytest.param(
            {**LOCAL, "headers": {"Content-Length": "5"}},
            'payload.headers["Content-Length"]',
            "set by the HTTP client",
            id="header-framing",
        ),
        pytest.param(
            {**LOCAL, "json": {}, "body": "x"},
            "payload",
            "must not have all of: json, body",
            id="json-and-body",
        ),
        pytest.param({**LOCAL, "body": {"a": 1}}, "payload.body", "string", id="b"),
        pytest.param({**LOCAL, "timeout": 0}, "payload.timeout", "more than 0", id="t0"),
        pytest.param({**LOCAL, "timeout": 61}, "payload.timeout", "at most", id="t"),
        pytest.param({**LOCAL, "timeout": "5"}, "payload.timeout", "a number", id="ts"),
        pytest.param({**LOCAL, "timeout": True}, "payload.timeout", "a number", id="tb"),
        pytest.param({**LOCAL, "expect_status": 99}, "payload.expect_status", "", id="s99"),
        pytest.param({**LOCAL, "expect_status": []}, "payload.expect_status", "", id="s[]"),
        pytest.param(
            {**LOCAL, "expect_status": [200, "201"]},
            "payload.expect_status[1]",
            "",
            id="s-str",
        ),
        pytest.param(
            {**LOCAL, "expect_status": True},
            "payload.expect_status",
            "",
            id="sb",
        ),
        pytest.param(
            {**LOCAL, "header": {}},
            "payload.header",
            "not a field",
            id="u",
        ),
    ],
)
def test_http_request_validate_payload__refuses(job, payload, field, message):
    with pytest.raises(PayloadError) as caught:
        job.payload_check(payload)

    assert field in caught.value.errors, caught.value.errors
    assert message in caught.value.errors[field]


@pytest.mark.parametrize("payload", [None, [], "http://localhost/", 3])
def test_http_request_validate_payload__refuses_a_non_object(job, payload):
    with pytest.raises(PayloadError) as caught:
        job.payload_check(payload)

    assert caught.value.errors == {"payload": "must be a JSON object"}


def test_http_request_validate_payload__refuses_a_wildcard_host_on_loopback(
    job, settings, httpserver
):
    # "*" allows any host, but only if it resolves to public addresses; localhost does not.
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["*"]

    with pytest.raises(PayloadError) as caught:
        job.payload_check({"url": httpserver.url_for("/x")})

    assert "non-public address" in caught.value.errors["payload.url"]


def test_http_request_submission__bad_payloads_are_refused_with_their_fields(client_a, httpserver):
    body = {
        "type": "http.request",
        "items": [
            {"payload": {"url": httpserver.url_for("/fine")}},
            {"payload": {"url": "http://example.com/"}},
            {"payload": {"url": httpserver.url_for("/x"), "method": "FETCH"}},
            {"payload": {"method": "GET"}},
            {"payload": {"url": httpserver.url_for("/x"), "timeout": 600}},
        ],
        "commit": True,
    }

    response = client_a.post(BATCHES, body, format="json")

    assert error_fields(assert_problem(response, 400, "invalid")) == {
        "[1].payload.url",
        "[2].payload.method",
        "[3].payload.url",
        "[4].payload.timeout",
    }
    assert not Item.objects.exists()
    assert httpserver.log == []


def test_http_request_job_types__lists_the_type_with_its_schema(client_a):
    response = client_a.get("/api/v1/job-types/")

    assert response.status_code == 200
    body = response.json()
    listed = body["results"] if isinstance(body, dict) else body
    described = next(entry for entry in listed if entry["name"] == "http.request")
    assert described["payload_schema"]["required"] == ["url"]
    assert described["accepts_file"] is False


# --- process: success ---------------------------------------------------------------------------


def test_http_request_process__returns_status_headers_body_and_json(job, httpserver):
    httpserver.expect_request("/rankings", method="GET", query_string="q=pizza").respond_with_json(
        {"rank": 3, "name": "Pizza Place"}, headers={"X-Request-Id": "abc"}
    )

    result = run(job, {"url": httpserver.url_for("/rankings?q=pizza")})

    assert result["status"] == 200
    assert result["headers"]["x-request-id"] == "abc"
    assert result["headers"]["content-type"] == "application/json"
    assert result["json"] == {"rank": 3, "name": "Pizza Place"}
    assert json.loads(result["body"]) == {"rank": 3, "name": "Pizza Place"}
    assert result["body_encoding"] == "text"
    assert result["truncated"] is False
    assert isinstance(result["elapsed_ms"], int)
    assert result["elapsed_ms"] >= 0
    json.dumps(result)  # the engine stores it as JSON


def test_http_request_process__sends_method_headers_and_json(job, httpserver):
    httpserver.expect_request(
        "/jobs",
        method="POST",
        headers={"X-Api-Key": "secret", "Content-Type": "application/json"},
        json={"business": "Pizza Place", "tags": ["a", "b"]},
    ).respond_with_data("created", status=201, content_type="text/plain")

    result = run(
        job,
        {
            "method": "post",
            "url": httpserver.url_for("/jobs"),
            "headers": {"X-Api-Key": "secret"},
            "json": {"business": "Pizza Place", "tags": ["a", "b"]},
        },
    )

    assert result["status"] == 201
    assert result["body"] == "created"
    assert "json" not in result


def test_http_request_process__sends_a_string_body_as_utf8(job, httpserver):
    httpserver.expect_request(
        "/raw", method="PUT", data="grüße".encode(), headers={"Content-Type": "text/plain"}
    ).respond_with_data("", status=204)

    result = run(
        job,
        {
            "method": "PUT",
            "url": httpserver.url_for("/raw"),
            "headers": {"Content-Type": "text/plain"},
            "body": "grüße",
        },
    )

    assert result["status"] == 204
    assert result["body"] == ""


def test_http_request_process__head_has_no_body(job, httpserver):
    httpserver.expect_request("/h", method="HEAD").respond_with_data("", headers={"X-N": "1"})

    result = run(job, {"method": "HEAD", "url": httpserver.url_for("/h")})

    assert result["status"] == 200
    assert result["headers"]["x-n"] == "1"
    assert result["body"] == ""


def test_http_request_process__binary_body_is_base64(job, httpserver):
    data = bytes(range(256)) * 4
    httpserver.expect_request("/logo.png").respond_with_data(data, content_type="image/png")

    result = run(job, {"url": httpserver.url_for("/logo.png")})

    assert result["body_encoding"] == "base64"
    assert base64.b64decode(result["body"]) == data
    assert "json" not in result


def test_http_request_process__text_that_is_not_utf8_is_base64(job, httpserver):
    data = b"\xff\xfe not utf-8"
    httpserver.expect_request("/t").respond_with_data(data, content_type="text/plain")

    result = run(job, {"url": httpserver.url_for("/t")})

    assert result["body_encoding"] == "base64"
    assert base64.b64decode(result["body"]) == data


def test_http_request_process__declared_charset_is_honoured(job, httpserver):
    httpserver.expect_request("/latin").respond_with_data(
        "café".encode("latin-1"), content_type="text/plain; charset=iso-8859-1"
    )

    result = run(job, {"url": httpserver.url_for("/latin")})

    assert result["body_encoding"] == "text"
    assert result["body"] == "café"


def test_http_request_process__body_over_the_cap_is_truncated(job, httpserver, settings):
    settings.BATCHSITE_HTTP_MAX_BODY_BYTES = 10
    httpserver.expect_request("/big").respond_with_data(
        "0123456789ABCDEF", content_type="text/plain"
    )

    result = run(job, {"url": httpserver.url_for("/big")})

    assert result["body"] == "0123456789"
    assert result["truncated"] is True


def test_http_request_process__truncated_json_is_text_without_json(job, httpserver, settings):
    settings.BATCHSITE_HTTP_MAX_BODY_BYTES = 8
    httpserver.expect_request("/big.json").respond_with_data(
        json.dumps({"long": "x" * 100}), content_type="application/json"
    )

    result = run(job, {"url": httpserver.url_for("/big.json")})

    assert result["truncated"] is True
    assert result["body"] == '{"long":'
    assert "json" not in result


def test_http_request_process__truncation_never_splits_a_character(job, httpserver, settings):
    # "a" is one byte and "é" two: a cap of two bytes ends inside the "é".
    settings.BATCHSITE_HTTP_MAX_BODY_BYTES = 2
    httpserver.expect_request("/u").respond_with_data("aéb".encode(), content_type="text/plain")

    result = run(job, {"url": httpserver.url_for("/u")})

    assert result["truncated"] is True
    assert result["body_encoding"] == "text"
    assert result["body"] == "a"


def test_http_request_process__follows_a_redirect_to_an_allowed_host(job, httpserver):
    httpserver.expect_request("/old").respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/new")}
    )
    httpserver.expect_request("/new").respond_with_json({"moved": True})

    result = run(job, {"url": httpserver.url_for("/old")})

    assert result["json"] == {"moved": True}
    assert result["url"] == httpserver.url_for("/new")


@pytest.mark.parametrize(("status", "expect"), [(404, 404), (500, [200, 500]), (201, [201])])
def test_http_request_process__expect_status_counts_as_success(job, httpserver, status, expect):
    httpserver.expect_request("/s").respond_with_data("x", status=status)

    result = run(job, {"url": httpserver.url_for("/s"), "expect_status": expect})

    assert result["status"] == status


# --- process: failures --------------------------------------------------------------------------


def test_http_request_process__404_fails_permanently(job, httpserver):
    httpserver.expect_request("/missing").respond_with_data(
        "no such business", status=404, content_type="text/plain"
    )

    with pytest.raises(PermanentError) as caught:
        run(job, {"url": httpserver.url_for("/missing")})

    assert caught.value.code == "http_4xx"
    assert "404" in caught.value.message
    assert "no such business" in caught.value.message


@pytest.mark.parametrize(
    ("status", "code"), [(500, "http_5xx"), (503, "http_5xx"), (429, "http_429")]
)
def test_http_request_process__5xx_and_429_are_transient(job, httpserver, status, code):
    httpserver.expect_request("/busy").respond_with_data("slow down", status=status)

    with pytest.raises(TransientError) as caught:
        run(job, {"url": httpserver.url_for("/busy")})

    assert caught.value.code == code


@pytest.mark.parametrize(
    ("status", "expect"),
    [
        (200, [201]),
        (204, 200),
        # A 3xx without a Location is an answer, not a redirect to follow.
        (304, None),
    ],
)
def test_http_request_process__status_not_expected_fails_permanently(
    job, httpserver, status, expect
):
    httpserver.expect_request("/s").respond_with_data("", status=status)
    payload = {"url": httpserver.url_for("/s")}
    if expect is not None:
        payload["expect_status"] = expect

    with pytest.raises(PermanentError) as caught:
        run(job, payload)

    assert caught.value.code == "unexpected_status"


def test_http_request_process__slow_answer_is_a_transient_timeout(job, httpserver):
    answer = threading.Event()

    def slow(request):
        answer.wait(30)  # until the test has seen the timeout
        return Response("late")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    try:
        with pytest.raises(TransientError) as caught:
            run(job, {"url": httpserver.url_for("/slow"), "timeout": 0.2})
    finally:
        answer.set()

    assert caught.value.code == "timeout"


def test_http_request_process__timeout_holds_after_a_redirect(job, httpserver):
    answer = threading.Event()

    def slow(request):
        answer.wait(30)
        return Response("late")

    httpserver.expect_request("/start").respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/slow")}
    )
    httpserver.expect_request("/slow").respond_with_handler(slow)
    try:
        with pytest.raises(TransientError) as caught:
            run(job, {"method": "POST", "url": httpserver.url_for("/start"), "timeout": 0.2})
    finally:
        answer.set()

    assert caught.value.code == "timeout"


def test_http_request_process__refused_connection_is_transient(job, settings):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["127.0.0.1"]

    with pytest.raises(TransientError) as caught:
        run(job, {"url": f"http://127.0.0.1:{refused_port()}/x"})

    assert caught.value.code == "connect_error"


def test_http_request_process__redirect_to_a_refused_host_is_refused(job, httpserver):
    httpserver.expect_request("/start").respond_with_data(
        "", status=302, headers={"Location": "http://example.com/"}
    )

    with pytest.raises(PermanentError) as caught:
        run(job, {"url": httpserver.url_for("/start")})

    assert caught.value.code == "refused"
    assert "example.com" in caught.value.message


def test_http_request_process__loopback_behind_a_wildcard_is_refused(job, settings, httpserver):
    # Allowed when the payload was checked; the allow-list now names no host, only "*",
    # and localhost resolves to loopback, which only an explicit entry may reach.
    httpserver.expect_request("/x").respond_with_data("must not be reached")
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["*"]

    with pytest.raises(PermanentError) as caught:
        run(job, {"url": httpserver.url_for("/x")})

    assert caught.value.code == "refused"
    assert "non-public address" in caught.value.message
    assert httpserver.log == []


def test_http_request_process__host_removed_from_the_allow_list_is_refused(
    job, settings, httpserver
):
    httpserver.expect_request("/x").respond_with_data("must not be reached")
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = []

    with pytest.raises(PermanentError) as caught:
        run(job, {"url": httpserver.url_for("/x")})

    assert caught.value.code == "refused"
    assert httpserver.log == []


# --- connections and concurrency ----------------------------------------------------------------


def test_http_request_connections__one_client_per_process(job, httpserver):
    httpserver.expect_request("/a").respond_with_data("a")
    first = http_request.connections()
    run(job, {"url": httpserver.url_for("/a")})
    run(job, {"url": httpserver.url_for("/a")})

    assert http_request.connections() is first
    assert not first.client.is_closed


def test_http_request_connections__a_forked_child_does_not_reuse_its_parents(monkeypatch):
    parent = http_request.Connections()
    # As a child sees it after a fork: the parent's connections, under the parent's pid.
    monkeypatch.setattr(http_request, "_connections", {os.getpid() + 1: parent})

    child = http_request.connections()

    assert child is not parent
    assert child.client is not parent.client
    assert child.pid == os.getpid()
    assert not parent.client.is_closed, "the parent's pool must be dropped, not closed"
    parent.client.close()


def test_http_request_process__holds_a_host_slot_during_the_request(job, httpserver, settings):
    settings.BATCHSITE_HTTP_PER_HOST_CONCURRENCY = 1
    slot = http_request.connections().host_slot(f"localhost:{httpserver.port}", 1)
    free_during_request = []

    def handler(request):
        taken = slot.acquire(blocking=False)
        free_during_request.append(taken)
        if taken:
            slot.release()
        return Response("ok")

    httpserver.expect_request("/x").respond_with_handler(handler)

    run(job, {"url": httpserver.url_for("/x")})

    assert free_during_request == [False], "the request ran without holding its host slot"
    assert slot.acquire(blocking=False), "the slot was not given back"
    slot.release()


@pytest.fixture
def threaded_server():
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_http_request_process__caps_requests_in_flight_per_host(job, settings, threaded_server):
    settings.BATCHSITE_HTTP_PER_HOST_CONCURRENCY = 2
    lock = threading.Lock()
    in_flight = [0]
    peak = [0]
    overflow = threading.Event()

    def handler(request):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            if in_flight[0] > 2:
                overflow.set()
        # Hold each request a while, so that without the cap the others pile up on it.
        overflow.wait(0.5)
        with lock:
            in_flight[0] -= 1
        return Response("ok")

    threaded_server.expect_request("/x").respond_with_handler(handler)
    results, errors = [], []

    def call():
        try:
            results.append(run(job, {"url": threaded_server.url_for("/x")}))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert len(results) == 6
    assert peak[0] <= 2, f"{peak[0]} requests to one host were in flight at once"


# --- through the engine -------------------------------------------------------------------------


def test_http_request_engine__503_then_success_is_retried(
    account, httpserver, backoffs, django_capture_on_commit_callbacks
):
    httpserver.expect_oneshot_request("/flaky").respond_with_data("busy", status=503)
    httpserver.expect_request("/flaky").respond_with_json({"ok": True})

    with django_capture_on_commit_callbacks(execute=True):
        batch, _ = services.batch_create(
            account=account,
            actor="test",
            type="http.request",
            items=[{"payload": {"url": httpserver.url_for("/flaky")}}],
            commit=True,
        )

    item = Item.objects.get(batch=batch)
    assert item.status == Item.Status.SUCCEEDED, (item.error_code, item.error_message)
    assert item.attempts == 2
    assert item.result["json"] == {"ok": True}
    assert backoffs == [1]
    assert len(httpserver.log) == 2


def test_http_request_engine__gives_up_after_max_attempts(
    account, httpserver, backoffs, django_capture_on_commit_callbacks
):
    httpserver.expect_request("/down").respond_with_data("down", status=503)

    with django_capture_on_commit_callbacks(execute=True):
        batch, _ = services.batch_create(
            account=account,
            actor="test",
            type="http.request",
            items=[{"payload": {"url": httpserver.url_for("/down")}}],
            commit=True,
        )

    item = Item.objects.get(batch=batch)
    assert item.status == Item.Status.FAILED
    assert item.error_code == "http_5xx"
    assert item.attempts == HttpRequest.max_attempts == 4
    assert len(httpserver.log) == 4


def test_http_request_engine__404_fails_the_item_at_once(
    account, httpserver, backoffs, django_capture_on_commit_callbacks
):
    httpserver.expect_request("/gone").respond_with_data("gone", status=404)
    httpserver.expect_request("/here").respond_with_json({"n": 1})

    with django_capture_on_commit_callbacks(execute=True):
        batch, _ = services.batch_create(
            account=account,
            actor="test",
            type="http.request",
            items=[
                {"payload": {"url": httpserver.url_for("/gone")}},
                {"payload": {"url": httpserver.url_for("/here")}},
            ],
            commit=True,
        )

    items = list(Item.objects.filter(batch=batch).order_by("index"))
    assert [i.status for i in items] == [Item.Status.FAILED, Item.Status.SUCCEEDED]
    assert items[0].error_code == "http_4xx"
    assert items[0].attempts == 1
    assert items[1].result["json"] == {"n": 1}
    assert backoffs == []


def test_http_request_registry__is_found_by_name():
    assert isinstance(get_job_type("http.request"), HttpRequest)
