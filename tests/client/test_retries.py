"""Retries, timeouts and redirects of the Python client, against a loopback HTTP server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from werkzeug import Request, Response

from batchsite_client import Client, ConnectionFailed, ServerError, Throttled
from batchsite_client._http import api_root, retry_after
from tests.client.conftest import CountingTransport
from tests.deploy.helpers import free_port

BATCH_ID = "00000000-0000-4000-8000-000000000001"
BATCH_PATH = f"/api/v1/batches/{BATCH_ID}/"
BATCH = {"id": BATCH_ID, "status": "open", "counts": {}, "progress": 0.0}
PROBLEM = "application/problem+json"


def problem(status: int, code: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": f"urn:batchsite:problem:{code}", "title": code, "status": status,
            "detail": f"{code} now", "code": code}  # fmt: skip
    return Response(json.dumps(body), status=status, content_type=PROBLEM, headers=headers)


@pytest.fixture
def api(httpserver):
    """A client of the loopback server with quick backoff, and the requests it sent."""
    transport = CountingTransport()
    with Client(
        httpserver.url_for("/"), "key", max_retries=2, backoff_factor=0.01, transport=transport
    ) as client:
        yield client, transport


def test_retry__429_with_retry_after_seconds_then_200(api, httpserver):
    client, transport = api
    httpserver.expect_ordered_request(BATCH_PATH).respond_with_response(
        problem(429, "throttled", {"Retry-After": "1"})
    )
    httpserver.expect_ordered_request(BATCH_PATH).respond_with_json(BATCH)

    assert client.get_batch(BATCH_ID) == BATCH
    assert len(transport.requests) == 2
    httpserver.check_assertions()


def test_retry__503_with_retry_after_date_then_200_on_a_post(api, httpserver):
    client, transport = api
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
    httpserver.expect_ordered_request(f"{BATCH_PATH}commit/", method="POST").respond_with_data(
        "down for a moment", status=503, headers={"Retry-After": soon}
    )
    httpserver.expect_ordered_request(f"{BATCH_PATH}commit/", method="POST").respond_with_json(
        BATCH
    )

    assert client.commit(BATCH_ID) == BATCH
    assert len(transport.requests) == 2


def test_retry__exhausted_raises_throttled(api, httpserver):
    client, transport = api
    httpserver.expect_request(BATCH_PATH).respond_with_response(
        problem(429, "throttled", {"Retry-After": "0"})
    )

    with pytest.raises(Throttled) as caught:
        client.get_batch(BATCH_ID)

    assert (caught.value.status, caught.value.code) == (429, "throttled")
    assert len(transport.requests) == 3  # the request and max_retries=2 retries


def test_retry__a_wait_longer_than_allowed_is_not_waited_for(httpserver):
    httpserver.expect_request(BATCH_PATH).respond_with_data(
        "maintenance", status=503, headers={"Retry-After": "3600"}
    )
    transport = CountingTransport()
    with (
        Client(httpserver.url_for("/"), "key", transport=transport) as client,
        pytest.raises(ServerError) as caught,
    ):
        client.get_batch(BATCH_ID)

    assert caught.value.status == 503
    assert caught.value.code == "http_503"
    assert len(transport.requests) == 1


def test_retry__connection_errors_retried_only_when_safe():
    transport = CountingTransport()
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "key", max_retries=2, backoff_factor=0.01, transport=transport) as client:
        with pytest.raises(ConnectionFailed):
            client.get_batch(BATCH_ID)
        assert len(transport.requests) == 3
        transport.requests.clear()

        with pytest.raises(ConnectionFailed):
            client.commit(BATCH_ID)
        assert len(transport.requests) == 1
        transport.requests.clear()

        with pytest.raises(ConnectionFailed):
            client.create_batch(type="echo")
        assert len(transport.requests) == 3
        ids = {json.loads(request.content)["id"] for request in transport.requests}
        assert len(ids) == 1, "every attempt creates the same batch"


def test_timeout__a_slow_answer_raises_connection_failed(httpserver):
    def slow(request: Request) -> Response:
        import time

        time.sleep(1)
        return Response(json.dumps(BATCH), content_type="application/json")

    httpserver.expect_request(BATCH_PATH).respond_with_handler(slow)
    url = httpserver.url_for("/")
    with (
        Client(url, "key", timeout=httpx.Timeout(0.2), max_retries=0) as client,
        pytest.raises(ConnectionFailed) as caught,
    ):
        client.get_batch(BATCH_ID)

    assert "ReadTimeout" in str(caught.value)
    assert caught.value.status is None


def test_download_package__a_redirect_to_another_host_gets_no_api_key(api, httpserver, tmp_path):
    client, transport = api
    # The same server under another name: a different origin, as an object store would be.
    elsewhere = httpserver.url_for("/bucket/package.zip").replace("localhost", "127.0.0.1")
    httpserver.expect_request(f"{BATCH_PATH}package/").respond_with_data(
        "", status=302, headers={"Location": elsewhere + "?X-Signature=abc"}
    )
    httpserver.expect_request("/bucket/package.zip").respond_with_data(
        b"PK\x05\x06" + bytes(18), content_type="application/zip"
    )

    saved = client.download_package(BATCH_ID, tmp_path / "package.zip")

    assert saved == 22
    assert (tmp_path / "package.zip").read_bytes()[:4] == b"PK\x05\x06"
    first, second = transport.requests
    assert first.headers["Authorization"] == "Api-Key key"
    assert second.url.host == "127.0.0.1"
    assert second.url.params["X-Signature"] == "abc"
    assert "Authorization" not in second.headers


def test_retry_after__seconds_dates_and_nonsense():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert retry_after("7", now=now) == 7.0
    assert retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0
    assert retry_after("soon", now=now) is None
    assert retry_after(None) is None


def test_api_root__server_or_api_url():
    assert str(api_root("http://h:8000")) == "http://h:8000/api/v1/"
    assert str(api_root("http://h:8000/")) == "http://h:8000/api/v1/"
    assert str(api_root("http://h/prefix/api/v1")) == "http://h/prefix/api/v1/"
    assert str(api_root("http://h/prefix/")) == "http://h/prefix/api/v1/"
