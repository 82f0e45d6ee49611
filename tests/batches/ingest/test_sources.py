"""Tests for batches.ingest.sources: batches filled from a file URL (Centrapay-style), end to end.

The source is served by a real HTTP server on loopback (pytest-httpserver); the allow-list
names `localhost` itself, which is what lets a loopback host through the outbound guard.
django-q2 runs in sync mode, so the ingest task runs inline when the create commits.
"""

from __future__ import annotations

import io
import json
import zipfile

import httpx
import pytest
from werkzeug import Response

from batches import services
from batches.ingest import sources
from batches.models import Batch, BatchError, Item
from tests.helpers.api import BATCHES, JSONL, assert_problem, batch_url, row_counts, serve
from tests.helpers.files import SNIFFED_FILES, UNRECOGNISABLE, jsonl_text


@pytest.fixture(autouse=True)
def _allow_localhost(settings):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]


@pytest.fixture
def ingest(client_a, django_capture_on_commit_callbacks):
    """Create a batch from a source URL and let its ingest task run; return (201 body, batch)."""

    def create(url: str, **body):
        with django_capture_on_commit_callbacks(execute=True):
            response = client_a.post(BATCHES, {"source_url": url, **body}, format="json")
        assert response.status_code == 201, response.content
        created = response.json()
        return created, Batch.objects.get(pk=created["id"])

    return create


def items_of(batch: Batch) -> list[tuple]:
    return list(
        Item.objects.filter(batch=batch)
        .order_by("index")
        .values_list("index", "external_id", "payload", "status")
    )


def only_error(batch: Batch) -> BatchError:
    errors = list(BatchError.objects.filter(batch=batch))
    assert len(errors) == 1, [(e.code, e.message) for e in errors]
    return errors[0]


# --- reading a source -----------------------------------------------------------------------------


def test_source_ingest__jsonl_source_opens_the_batch_with_its_items(httpserver, ingest, client_a):
    lines = [{"external_id": f"e{n}", "payload": {"n": n}} for n in range(4)]
    url = serve(httpserver, "/items.jsonl", jsonl_text(lines))

    created, batch = ingest(url, type="echo")

    assert created["status"] == "ingesting"
    assert created["source_url"] == url
    assert batch.status == Batch.Status.OPEN
    assert items_of(batch) == [(n, f"e{n}", {"n": n}, "pending") for n in range(4)]
    detail = client_a.get(batch_url(batch)).json()
    assert detail["status"] == "open"
    assert detail["counts"]["total"] == 4
    assert detail["counts"]["pending"] == 4
    assert detail["error_count"] == 0


def test_source_ingest__commit_true_processes_the_items(httpserver, ingest):
    url = serve(httpserver, "/items.jsonl", jsonl_text([{"payload": {"n": n}} for n in range(3)]))

    created, batch = ingest(url, commit=True)

    assert created["status"] == "ingesting"
    assert batch.status == Batch.Status.FINISHED
    assert batch.committed_at is not None
    assert batch.succeeded_items == 3
    results = Item.objects.filter(batch=batch).order_by("index").values_list("result", flat=True)
    assert list(results) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_source_ingest__bad_line_becomes_an_error_and_the_rest_are_added(
    httpserver, ingest, client_a
):
    lines: list = [{"external_id": f"e{n}", "payload": {"n": n}} for n in range(8)]
    lines[5] = "{not json"
    url = serve(httpserver, "/items.jsonl", jsonl_text(lines))

    _, batch = ingest(url)

    assert batch.status == Batch.Status.OPEN
    assert batch.error_count == 1
    assert batch.total_items == 7
    ids = list(Item.objects.filter(batch=batch).order_by("index").values_list("external_id"))
    assert [i for (i,) in ids] == [f"e{n}" for n in range(8) if n != 5]
    detail = client_a.get(batch_url(batch)).json()
    assert detail["error_count"] == 1
    assert len(detail["errors"]) == 1
    error = detail["errors"][0]
    assert error["index"] == 5
    assert error["code"] == "invalid_json"
    assert "not JSON" in error["message"]


def test_source_ingest__csv_source_is_read_by_its_content_type(httpserver, ingest):
    body = "external_id,name,size\na,apple,3\nb,banana,5\n"
    url = serve(httpserver, "/download", body, content_type="text/csv; charset=utf-8")

    _, batch = ingest(url)

    assert batch.status == Batch.Status.OPEN
    assert items_of(batch) == [
        (0, "a", {"name": "apple", "size": "3"}, "pending"),
        (1, "b", {"name": "banana", "size": "5"}, "pending"),
    ]


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/items.jsonl", jsonl_text([{"external_id": "j", "payload": {"x": 1}}]), ("j", {"x": 1})),
        ("/items.csv", "external_id,x\nc,1\n", ("c", {"x": "1"})),
    ],
    ids=["jsonl", "csv"],
)
def test_source_ingest__octet_stream_source_is_read_by_its_url_extension(
    httpserver, ingest, path, body, expected
):
    url = serve(httpserver, path, body, content_type="application/octet-stream")

    _, batch = ingest(url)

    assert batch.status == Batch.Status.OPEN
    assert [(ext, payload) for _, ext, payload, _ in items_of(batch)] == [expected]


@pytest.mark.parametrize(("fmt", "body", "job_type"), SNIFFED_FILES)
@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/1234", "application/octet-stream"),
        ("/1234", ""),
        ("/export.dat", "binary/octet-stream"),
        ("/download", "text/plain; charset=utf-8"),
    ],
    ids=["no-extension", "no-content-type", "unknown-extension", "text-plain"],
)
def test_source_ingest__source_is_read_by_its_content_when_nothing_else_tells(
    httpserver, ingest, path, content_type, fmt, body, job_type
):
    response = Response(body)
    del response.headers["Content-Type"]
    if content_type:
        response.headers["Content-Type"] = content_type
    httpserver.expect_request(path).respond_with_response(response)

    _, batch = ingest(httpserver.url_for(path), type=job_type)

    assert batch.status == Batch.Status.OPEN, list(BatchError.objects.values_list("message"))
    assert [ext for _, ext, _, _ in items_of(batch)] == ["a", "b"]
    [event] = batch.events.filter(kind="items_uploaded")
    assert event.detail["format"] == fmt


def test_source_ingest__json_source_is_an_array_of_items(httpserver, ingest):
    body = json.dumps([{"external_id": f"e{n}", "payload": {"n": n}} for n in range(3)])
    url = serve(httpserver, "/items.json", body, content_type="application/json")

    _, batch = ingest(url)

    assert batch.status == Batch.Status.OPEN
    assert items_of(batch) == [(n, f"e{n}", {"n": n}, "pending") for n in range(3)]


@pytest.mark.parametrize("body", UNRECOGNISABLE)
def test_source_ingest__content_of_no_known_format_fails_saying_what_is_read(
    httpserver, ingest, body
):
    url = serve(httpserver, "/1234", body, content_type="application/octet-stream")

    _, batch = ingest(url)

    assert batch.status == Batch.Status.FAILED
    assert batch.total_items == 0
    error = only_error(batch)
    assert error.code == "source_format"
    assert error.message == (
        "cannot tell the format of the source (Content-Type 'application/octet-stream'): its "
        "content is none of JSON Lines, a JSON array of items, CSV (a header row of "
        "comma-separated column names) or ZIP"
    )


def test_source_ingest__zip_source_gives_file_items(httpserver, ingest):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", b"alpha")
        archive.writestr("b.txt", b"beta")
    url = serve(httpserver, "/docs.zip", buffer.getvalue(), content_type="application/zip")

    _, batch = ingest(url, type="test.stamp", commit=True)

    assert batch.status == Batch.Status.FINISHED
    assert batch.succeeded_items == 2
    keys = list(Item.objects.filter(batch=batch).order_by("index").values_list("key", flat=True))
    assert keys == ["a.txt", "b.txt"]


def test_source_ingest__redirect_to_an_allowed_host_is_followed(httpserver, ingest):
    target = serve(httpserver, "/items.jsonl", jsonl_text([{"payload": {"n": 1}}]))
    httpserver.expect_request("/old").respond_with_data(
        "", status=302, headers={"Location": target}
    )

    _, batch = ingest(httpserver.url_for("/old"))

    assert batch.status == Batch.Status.OPEN
    assert batch.total_items == 1


# --- sources that cannot be read ------------------------------------------------------------------


def test_source_ingest__404_fails_the_batch_saying_why(httpserver, ingest, client_a):
    url = serve(httpserver, "/gone.jsonl", "not here", status=404)

    _, batch = ingest(url)

    assert batch.status == Batch.Status.FAILED
    assert batch.finished_at is not None
    assert batch.total_items == 0
    error = only_error(batch)
    assert error.code == "source_unreadable"
    assert "404" in error.message
    detail = client_a.get(batch_url(batch)).json()
    assert detail["status"] == "failed"
    assert detail["error_count"] == 1
    assert detail["errors"][0]["code"] == "source_unreadable"


@pytest.mark.parametrize(
    "location",
    ["http://example.com/x.jsonl", "http://127.0.0.1:{port}/items.jsonl"],
    ids=["other-host", "loopback-ip-not-named"],
)
def test_source_ingest__redirect_to_a_refused_host_fails_the_batch(httpserver, ingest, location):
    serve(httpserver, "/items.jsonl", jsonl_text([{"payload": {}}]))
    httpserver.expect_request("/hop").respond_with_data(
        "", status=302, headers={"Location": location.format(port=httpserver.port)}
    )

    _, batch = ingest(httpserver.url_for("/hop"))

    assert batch.status == Batch.Status.FAILED
    assert batch.total_items == 0
    error = only_error(batch)
    assert error.code == "source_unreadable"
    assert "refused" in error.message
    assert "not in BATCHSITE_OUTBOUND_ALLOWED_HOSTS" in error.message


def test_source_ingest__redirect_to_a_bad_port_fails_the_batch(ingest, settings, monkeypatch):
    # A worker must end the batch `failed`, not leave it `ingesting` for the sweep to resend
    # forever, when a redirect points at a URL the guard cannot even parse. (Werkzeug will
    # not send such a Location, so this source is served by an httpx mock transport.)
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost", "*.example.com"]

    def answer(request):
        location = "http://files.example.com:99999/x.jsonl"
        return httpx.Response(302, headers={"Location": location})

    monkeypatch.setattr(
        sources.outbound,
        "Client",
        lambda **kwargs: httpx.Client(transport=httpx.MockTransport(answer), **kwargs),
    )

    _, batch = ingest("http://localhost/hop.jsonl")

    assert batch.status == Batch.Status.FAILED
    error = only_error(batch)
    assert error.code == "source_unreadable"
    assert "99999" in error.message or "port" in error.message.lower()


def test_source_ingest__oversize_source_with_a_length_fails_naming_the_limit(
    httpserver, ingest, settings
):
    settings.BATCHSITE_MAX_UPLOAD_BYTES = 100
    url = serve(httpserver, "/big.jsonl", jsonl_text([{"payload": {"n": n}} for n in range(50)]))

    _, batch = ingest(url)

    assert batch.status == Batch.Status.FAILED
    assert batch.total_items == 0
    error = only_error(batch)
    assert error.code == "source_unreadable"
    assert "limit is 100" in error.message


def test_source_ingest__oversize_source_without_a_length_fails_naming_the_limit(
    httpserver, ingest, settings
):
    settings.BATCHSITE_MAX_UPLOAD_BYTES = 100
    line = (json.dumps({"payload": {"pad": "x" * 40}}) + "\n").encode()

    def streamed(request):
        return Response((line for _ in range(50)), content_type=JSONL)

    httpserver.expect_request("/stream.jsonl").respond_with_handler(streamed)

    _, batch = ingest(httpserver.url_for("/stream.jsonl"))

    assert batch.status == Batch.Status.FAILED
    assert batch.total_items == 0
    error = only_error(batch)
    assert error.code == "source_unreadable"
    assert "more than 100 bytes" in error.message  # counted while streaming


def test_source_ingest__unknown_format_fails_with_source_format(httpserver, ingest):
    url = serve(httpserver, "/items.txt", "hello\n", content_type="text/plain")

    _, batch = ingest(url)

    assert batch.status == Batch.Status.FAILED
    error = only_error(batch)
    assert error.code == "source_format"
    assert "text/plain" in error.message


def test_source_ingest__source_without_a_valid_line_fails(httpserver, ingest):
    url = serve(httpserver, "/bad.jsonl", jsonl_text(["{nope", "[1, 2]", '"text"']))

    _, batch = ingest(url)

    assert batch.status == Batch.Status.FAILED
    assert batch.total_items == 0
    assert not Item.objects.filter(batch=batch).exists()
    codes = set(BatchError.objects.filter(batch=batch).values_list("code", flat=True))
    assert "source_empty" in codes


def test_source_ingest__empty_source_fails(httpserver, ingest):
    url = serve(httpserver, "/empty.jsonl", "")

    _, batch = ingest(url)

    assert batch.status == Batch.Status.FAILED
    error = only_error(batch)
    assert error.code == "source_unreadable"
    assert "no items" in error.message


def test_source_ingest__zip_source_for_a_type_without_files_fails(httpserver, ingest):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", b"alpha")
    url = serve(httpserver, "/docs.zip", buffer.getvalue(), content_type="application/zip")

    _, batch = ingest(url, type="echo")

    assert batch.status == Batch.Status.FAILED
    error = only_error(batch)
    assert error.code == "source_unreadable"
    assert "does not take files" in error.message


# --- refused at create ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/items.jsonl",
        "http://127.0.0.1:8000/items.jsonl",
        "ftp://localhost/items.jsonl",
        "file:///etc/passwd",
        "http:///items.jsonl",
    ],
    ids=["host-not-allowed", "loopback-ip-not-named", "ftp", "file", "no-host"],
)
def test_batch_create__refused_source_url_is_400_and_creates_nothing(client_a, url):
    before = row_counts()

    response = client_a.post(BATCHES, {"source_url": url}, format="json")

    body = assert_problem(response, 400, "invalid")
    assert [error["field"] for error in body["errors"]] == ["source_url"]
    assert row_counts() == before


def test_batch_create__source_url_with_a_bad_port_is_400_and_creates_nothing(client_a, settings):
    # A host allowed by a wildcard is resolved before the fetch; a port out of range must be
    # refused as bad input, not crash the request.
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["*.example.com"]
    before = row_counts()

    response = client_a.post(
        BATCHES, {"source_url": "http://files.example.com:99999/items.jsonl"}, format="json"
    )

    body = assert_problem(response, 400, "invalid")
    assert [error["field"] for error in body["errors"]] == ["source_url"]
    assert row_counts() == before


def test_batch_create__source_url_with_items_is_400(client_a, httpserver):
    before = row_counts()

    response = client_a.post(
        BATCHES,
        {"source_url": httpserver.url_for("/items.jsonl"), "items": [{"payload": {}}]},
        format="json",
    )

    body = assert_problem(response, 400, "invalid")
    assert "source_url" in {error["field"] for error in body["errors"]}
    assert row_counts() == before


# --- cancel and re-delivery -----------------------------------------------------------------------


def test_source_ingest__cancel_while_ingesting_then_a_late_run_adds_nothing(httpserver, client_a):
    url = serve(httpserver, "/items.jsonl", jsonl_text([{"payload": {"n": n}} for n in range(3)]))
    created = client_a.post(BATCHES, {"source_url": url}, format="json").json()
    assert created["status"] == "ingesting"

    response = client_a.post(batch_url(created, "cancel/"))

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
    assert sources.source_ingest(batch_id=created["id"]) == "not ingesting"
    batch = Batch.objects.get(pk=created["id"])
    assert batch.status == Batch.Status.CANCELLED
    assert batch.total_items == 0
    assert not Item.objects.filter(batch=batch).exists()


def test_source_ingest__cancel_during_the_download_adds_nothing(httpserver, account, monkeypatch):
    url = serve(httpserver, "/items.jsonl", jsonl_text([{"payload": {"n": n}} for n in range(3)]))
    batch, _ = services.batch_create(account=account, actor="test", source_url=url)
    real_download = sources.download

    def download_then_cancel(source_url):
        fetched = real_download(source_url)
        services.batch_cancel(batch=batch, actor="test")
        return fetched

    monkeypatch.setattr(sources, "download", download_then_cancel)

    outcome = sources.source_ingest(batch_id=batch.pk)

    assert outcome == "no longer ingesting"
    batch.refresh_from_db()
    assert batch.status == Batch.Status.CANCELLED
    assert batch.total_items == 0
    assert not Item.objects.filter(batch=batch).exists()


def test_source_ingest__second_delivery_adds_the_items_once(httpserver, account):
    url = serve(httpserver, "/items.jsonl", jsonl_text([{"payload": {"n": n}} for n in range(5)]))
    batch, _ = services.batch_create(account=account, actor="test", source_url=url)

    first = sources.source_ingest(batch_id=batch.pk)
    second = sources.source_ingest(batch_id=batch.pk)

    assert first == "open"
    assert second == "not ingesting"
    batch.refresh_from_db()
    assert batch.status == Batch.Status.OPEN
    assert batch.total_items == 5
    indexes = list(Item.objects.filter(batch=batch).values_list("index", flat=True))
    assert sorted(indexes) == [0, 1, 2, 3, 4]


def test_source_ingest__delivery_while_another_worker_reads_does_nothing(httpserver, account):
    from batches.engine.locks import lock_acquire

    url = serve(httpserver, "/items.jsonl", jsonl_text([{"payload": {}}]))
    batch, _ = services.batch_create(account=account, actor="test", source_url=url)
    assert lock_acquire(name=f"ingest:{batch.pk}", owner="other-worker", seconds=60)

    outcome = sources.source_ingest(batch_id=batch.pk)

    assert outcome == "another worker is reading it"
    batch.refresh_from_db()
    assert batch.status == Batch.Status.INGESTING
    assert batch.total_items == 0
