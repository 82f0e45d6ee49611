"""POST batches/{id}/upload/: a JSONL, JSON array, CSV or ZIP file as the raw body, streamed
and staged; an application/octet-stream body is read in the format its first bytes show.

Every refusal is checked for its status, code and reported index, and for leaving nothing
behind: no rows, no counters moved, no extracted or staging files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings

from batches import services
from batches.ingest import bulk, staging
from batches.models import Batch, BatchError, Item
from tests.factories import open_batch
from tests.helpers.api import assert_problem, batch_url, error_fields, row_counts
from tests.helpers.files import (
    MB,
    SNIFFED_FILES,
    UNRECOGNISABLE,
    batch_files_dir,
    bomb_data,
    csv_bytes,
    encrypted_zip_data,
    jsonl,
    lying_zip_data,
    symlink_info,
    tree,
    zip_data,
)

JSONL = "application/x-ndjson"
JSON = "application/json"
CSV = "text/csv"
ZIP = "application/zip"
OCTET_STREAM = "application/octet-stream"


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path) -> Path:
    """Give each test its own data dir, so leftover files are easy to spot."""
    settings.BATCHSITE_DATA_DIR = tmp_path / "data"
    settings.MEDIA_ROOT = tmp_path / "data" / "files"
    return settings.BATCHSITE_DATA_DIR


@pytest.fixture
def empty_batch(account) -> Batch:
    batch, _ = services.batch_create(account=account, actor="test")
    return batch


@pytest.fixture
def file_batch(account) -> Batch:
    """A batch of `test.stamp` (tests/jobtypes.py), a type that takes files."""
    batch, _ = services.batch_create(account=account, actor="test", type="test.stamp")
    return batch


@pytest.fixture
def run_inline(django_capture_on_commit_callbacks):
    """Run what a block queues on commit (chunk tasks, in sync mode) when the block exits."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def upload(client, batch, body: bytes, content_type: str, **params):
    """POST `body` as the raw body of an upload, with `params` in the query string."""
    url = batch_url(batch, "upload/")
    if params:
        url = f"{url}?{urlencode(params)}"
    return client.generic("POST", url, body, content_type=content_type)


def files_of(batch) -> list[str]:
    """Return every file under the batch's files dir."""
    return tree(batch_files_dir(batch.pk))


def staging_files() -> list[str]:
    return tree(Path(django_settings.BATCHSITE_DATA_DIR) / "tmp")


def counters(batch) -> tuple:
    batch.refresh_from_db()
    return (
        batch.status,
        batch.total_items,
        batch.pending_items,
        batch.error_count,
    )


def items_of(batch) -> list[tuple]:
    return list(
        Item.objects.filter(batch=batch)
        .order_by("index")
        .values_list("index", "external_id", "key", "type", "payload")
    )


def assert_nothing_added(batch, before_rows, before_counters) -> None:
    assert row_counts() == before_rows
    assert counters(batch) == before_counters
    assert files_of(batch) == []
    assert staging_files() == []


def refused(client, batch, body, content_type, *, status=400, code="invalid", **params) -> dict:
    """Upload `body`, assert it is refused and that nothing landed; return the problem."""
    before_rows, before_counters = row_counts(), counters(batch)

    response = upload(client, batch, body, content_type, **params)

    problem = assert_problem(response, status, code)
    assert_nothing_added(batch, before_rows, before_counters)
    return problem


# --- good files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [JSONL, "application/jsonl", "application/x-ndjson; charset=utf-8", "Application/X-NDJSON"],
)
def test_upload__jsonl_adds_one_item_per_line(client_a, empty_batch, content_type):
    body = jsonl(
        {"external_id": "a", "key": "k-a", "payload": {"n": 0}},
        {"external_id": "b", "type": "test.flaky", "payload": {"n": 1}},
        {"payload": {"n": 2}},
    )

    response = upload(client_a, empty_batch, body, content_type)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "added": 3,
        "rejected": 0,
        "valid": 3,
        "dry_run": False,
        "format": "jsonl",
        "errors": [],
    }
    assert items_of(empty_batch) == [
        (0, "a", "k-a", "echo", {"n": 0}),
        (1, "b", "", "test.flaky", {"n": 1}),
        (2, "", "", "echo", {"n": 2}),
    ]
    assert counters(empty_batch) == (Batch.Status.OPEN, 3, 3, 0)
    assert staging_files() == []


def test_upload__the_batch_shows_the_added_items_and_the_event(client_a, empty_batch):
    upload(client_a, empty_batch, jsonl({"payload": {}}, {"payload": {}}), JSONL)

    batch = client_a.get(batch_url(empty_batch)).json()
    events = client_a.get(batch_url(empty_batch, "events/")).json()["results"]

    assert batch["status"] == "open"
    assert batch["counts"]["total"] == batch["counts"]["pending"] == 2
    assert events[-1]["kind"] == "items_uploaded"
    assert events[-1]["detail"] == {"format": "jsonl", "added": 2, "rejected": 0}


def test_upload__csv_maps_item_columns_and_keeps_the_rest_as_string_payload(client_a, empty_batch):
    body = csv_bytes(
        ["external_id", "type", "key", "n", "name", "flag"],
        ["a", "", "k-a", "1", "Ann", "true"],
        ["b", "test.flaky", "", "02", "", "null"],
    )

    response = upload(client_a, empty_batch, body, CSV)

    assert response.status_code == 200, response.content
    assert response.json()["added"] == 2
    assert response.json()["format"] == "csv"
    assert items_of(empty_batch) == [
        (0, "a", "k-a", "echo", {"n": "1", "name": "Ann", "flag": "true"}),
        (1, "b", "", "test.flaky", {"n": "02", "name": "", "flag": "null"}),
    ]


def test_upload__csv_types_infer_reads_numbers_bools_and_nulls(client_a, empty_batch):
    body = csv_bytes(
        ["external_id", "n", "x", "ok", "none", "name"], ["a", "7", "2.5", "TRUE", "", "Ann"]
    )

    response = upload(client_a, empty_batch, body, "text/csv; charset=utf-8", csv_types="infer")

    assert response.status_code == 200, response.content
    assert items_of(empty_batch) == [
        (0, "a", "", "echo", {"n": 7, "x": 2.5, "ok": True, "none": None, "name": "Ann"})
    ]


def test_upload__csv_payload_still_meets_the_type_rules_when_inferred(client_a, empty_batch):
    # With inference, "fail" = "yes" stays a string, which echo refuses.
    body = csv_bytes(["external_id", "fail"], ["a", "yes"], ["b", "false"])

    response = upload(client_a, empty_batch, body, CSV, csv_types="infer")

    assert response.status_code == 200, response.content
    report = response.json()
    assert (report["added"], report["rejected"]) == (1, 1)
    assert report["errors"][0]["index"] == 0
    assert report["errors"][0]["external_id"] == "a"
    assert items_of(empty_batch) == [(0, "b", "", "echo", {"fail": False})]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSONL, b'\xef\xbb\xbf{"external_id": "a", "payload": {}}\n{"payload": {"n": 1}}\n'),
        (JSONL, b'{"external_id": "a", "payload": {}}\r\n{"payload": {"n": 1}}\r\n'),
        (JSONL, b'\xef\xbb\xbf{"external_id": "a", "payload": {}}\r\n{"payload": {"n": 1}}'),
        (CSV, b"\xef\xbb\xbfexternal_id,n\na,\n,1\n"),
        (CSV, b"external_id,n\r\na,\r\n,1\r\n"),
        (CSV, b"\xef\xbb\xbfexternal_id,n\r\na,\r\n,1"),
    ],
    ids=["jsonl-bom", "jsonl-crlf", "jsonl-bom-crlf", "csv-bom", "csv-crlf", "csv-bom-crlf"],
)
def test_upload__bom_and_crlf_are_accepted(client_a, empty_batch, content_type, body):
    response = upload(client_a, empty_batch, body, content_type)

    assert response.status_code == 200, response.content
    assert (response.json()["added"], response.json()["rejected"]) == (2, 0)
    assert [item[1] for item in items_of(empty_batch)] == ["a", ""]


def test_upload__zip_members_become_file_items(client_a, file_batch):
    body = zip_data([("contract.pdf", b"%PDF-1.7 contract"), ("annex.txt", b"annex")])

    response = upload(client_a, file_batch, body, ZIP)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "added": 2,
        "rejected": 0,
        "valid": 2,
        "dry_run": False,
        "format": "zip",
        "errors": [],
    }
    assert items_of(file_batch) == [
        (0, "contract.pdf", "contract.pdf", "test.stamp", {}),
        (1, "annex.txt", "annex.txt", "test.stamp", {}),
    ]
    media = Path(django_settings.MEDIA_ROOT)
    stored = [
        media / name
        for name in Item.objects.filter(batch=file_batch)
        .order_by("index")
        .values_list("input_file", flat=True)
    ]
    assert [path.read_bytes() for path in stored] == [b"%PDF-1.7 contract", b"annex"]
    batch_dir = batch_files_dir(file_batch.pk)
    assert all(path.is_relative_to(batch_dir) for path in stored)
    assert all(Path(django_settings.BATCHSITE_DATA_DIR) in path.parents for path in stored)
    assert len(files_of(file_batch)) == 2
    assert staging_files() == []


def test_upload__zip_items_run_on_their_files(client_a, file_batch, run_inline):
    files = {"a.bin": b"alpha", "b.bin": b"\x00\x01" * 5000}
    upload(client_a, file_batch, zip_data(list(files.items())), ZIP)

    with run_inline():
        response = client_a.post(batch_url(file_batch, "commit/"))

    assert response.status_code == 200, response.content
    results = dict(Item.objects.filter(batch=file_batch).values_list("external_id", "result"))
    assert results == {
        name: {"sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()
    }


def test_upload__item_indexes_continue_after_items_added_as_json(client_a, account):
    batch = open_batch(account=account, items=3)
    client_a.post(batch_url(batch, "items/"), [{"payload": {"n": 3}}], format="json")
    body = (
        jsonl({"external_id": "u0", "payload": {}})
        + b"{bad\n"
        + jsonl({"external_id": "u2", "payload": {}})
    )

    response = upload(client_a, batch, body, JSONL)

    assert response.status_code == 200, response.content
    assert [item[:2] for item in items_of(batch)][4:] == [(4, "u0"), (5, "u2")]
    # The refused line is reported at its place in the file, not in the batch.
    assert [error["index"] for error in response.json()["errors"]] == [1]
    assert counters(batch) == (Batch.Status.OPEN, 6, 6, 1)
    # And a second upload continues after the first.
    upload(client_a, batch, jsonl({"external_id": "v0", "payload": {}}), JSONL)
    assert items_of(batch)[-1][:2] == (6, "v0")


# --- on_error ------------------------------------------------------------------------------------

MIXED_JSONL = (
    jsonl({"external_id": "a", "payload": {"n": 0}})
    + b'{"external_id": "b", "payload": \n'
    + jsonl({"external_id": "c", "payload": {"fail": "yes"}})
    + jsonl({"external_id": "d", "payload": {"n": 3}})
)


def test_upload__skip_adds_good_lines_and_records_bad_ones(client_a, empty_batch):
    response = upload(client_a, empty_batch, MIXED_JSONL, JSONL)

    assert response.status_code == 200, response.content
    report = response.json()
    assert (report["added"], report["rejected"], report["valid"]) == (2, 2, 2)
    assert [(e["index"], e["code"]) for e in report["errors"]] == [
        (1, "invalid_json"),
        (2, "invalid"),
    ]
    assert "external_id" not in report["errors"][0]  # the line could not be read
    assert report["errors"][1]["external_id"] == "c"
    assert "payload.fail" in report["errors"][1]["message"]
    assert [item[:2] for item in items_of(empty_batch)] == [(0, "a"), (1, "d")]
    errors = client_a.get(batch_url(empty_batch, "errors/")).json()["results"]
    assert [(e["index"], e["external_id"], e["code"]) for e in errors] == [
        (1, "", "invalid_json"),
        (2, "c", "invalid"),
    ]
    assert all(e["message"] for e in errors)
    detail = client_a.get(batch_url(empty_batch)).json()
    assert detail["error_count"] == 2
    assert [e["index"] for e in detail["errors"]] == [1, 2]


def test_upload__skip_can_be_named(client_a, empty_batch):
    response = upload(client_a, empty_batch, MIXED_JSONL, JSONL, on_error="skip")

    assert response.status_code == 200
    assert (response.json()["added"], response.json()["rejected"]) == (2, 2)


def test_upload__skip_with_every_line_bad_adds_nothing_but_the_errors(client_a, empty_batch):
    response = upload(client_a, empty_batch, b"{bad\n[1]\n", JSONL)

    assert response.status_code == 200, response.content
    assert (response.json()["added"], response.json()["rejected"]) == (0, 2)
    assert counters(empty_batch)[1:] == (0, 0, 2)
    assert BatchError.objects.filter(batch=empty_batch).count() == 2


def test_upload__reject_refuses_the_whole_file_on_any_bad_line(client_a, account):
    batch = open_batch(account=account, items=2)

    problem = refused(client_a, batch, MIXED_JSONL, JSONL, on_error="reject")

    assert [error["index"] for error in problem["errors"]] == [1, 2]
    assert problem["errors"][1]["external_id"] == "c"
    assert not BatchError.objects.filter(batch=batch).exists()


def test_upload__reject_accepts_a_clean_file(client_a, empty_batch):
    response = upload(
        client_a, empty_batch, jsonl({"payload": {}}, {"payload": {}}), JSONL, on_error="reject"
    )

    assert response.status_code == 200, response.content
    assert response.json()["added"] == 2


def test_upload__errors_in_the_answer_are_capped_but_all_are_recorded(client_a, empty_batch):
    bad = staging.REPORTED_ERRORS + 20
    body = b"{bad\n" * bad + jsonl({"payload": {}})

    response = upload(client_a, empty_batch, body, JSONL)

    report = response.json()
    assert (report["added"], report["rejected"]) == (1, bad)
    assert len(report["errors"]) == staging.REPORTED_ERRORS
    assert BatchError.objects.filter(batch=empty_batch).count() == bad
    assert counters(empty_batch)[3] == bad


# --- dry run -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["1", "true"])
def test_upload__dry_run_reports_without_adding(client_a, account, flag):
    batch = open_batch(account=account, items=1)
    before_rows, before_counters = row_counts(), counters(batch)

    response = upload(client_a, batch, MIXED_JSONL, JSONL, dry_run=flag)

    assert response.status_code == 200, response.content
    report = response.json()
    assert (report["added"], report["valid"], report["rejected"], report["dry_run"]) == (
        0,
        2,
        2,
        True,
    )
    assert [error["index"] for error in report["errors"]] == [1, 2]
    assert_nothing_added(batch, before_rows, before_counters)


def test_upload__dry_run_of_a_zip_leaves_no_files(client_a, file_batch):
    before_rows, before_counters = row_counts(), counters(file_batch)

    response = upload(
        client_a, file_batch, zip_data([("a.txt", b"a"), ("b.txt", b"b")]), ZIP, dry_run=1
    )

    assert response.status_code == 200, response.content
    assert (response.json()["added"], response.json()["valid"]) == (0, 2)
    assert_nothing_added(file_batch, before_rows, before_counters)


def test_upload__dry_run_with_reject_still_refuses_bad_files(client_a, empty_batch):
    problem = refused(client_a, empty_batch, MIXED_JSONL, JSONL, dry_run=1, on_error="reject")

    assert [error["index"] for error in problem["errors"]] == [1, 2]


# --- bad lines -----------------------------------------------------------------------------------

GOOD_LINE = jsonl({"external_id": "ok", "payload": {}})

BAD_LINES = [
    pytest.param(
        JSONL,
        GOOD_LINE + b'{"external_id": "t", "payload": {"n": 1\n' + GOOD_LINE,
        1,
        "invalid_json",
        None,
        id="jsonl-truncated",
    ),
    pytest.param(
        JSONL,
        GOOD_LINE + GOOD_LINE + b'{"external_id": "caf\xe9", "payload": {}}\n',
        2,
        "invalid_utf8",
        None,
        id="jsonl-invalid-utf8",
    ),
    pytest.param(JSONL, GOOD_LINE + b"[1, 2, 3]\n", 1, "invalid", None, id="jsonl-array"),
    pytest.param(JSONL, b'"just text"\n' + GOOD_LINE, 0, "invalid", None, id="jsonl-string"),
    pytest.param(
        JSONL,
        GOOD_LINE + jsonl({"external_id": "u", "payload": {}, "colour": "red"}),
        1,
        "invalid",
        "u",
        id="jsonl-unknown-field",
    ),
    pytest.param(
        JSONL,
        GOOD_LINE + jsonl({"external_id": "e", "payload": {"sleep_ms": -1}}),
        1,
        "invalid",
        "e",
        id="jsonl-echo-payload",
    ),
    pytest.param(
        JSONL,
        GOOD_LINE + jsonl({"external_id": "p"}),
        1,
        "invalid",
        "p",
        id="jsonl-no-payload",
    ),
    pytest.param(
        JSONL,
        GOOD_LINE + jsonl({"external_id": "t", "type": "no.such", "payload": {}}),
        1,
        "invalid",
        "t",
        id="jsonl-unknown-type",
    ),
    pytest.param(
        JSONL,
        GOOD_LINE + b"\n\n" + jsonl({"external_id": "b", "payload": {"fail": 1}}),
        3,
        "invalid",
        "b",
        id="jsonl-index-counts-blank-lines",
    ),
    pytest.param(
        CSV, b"external_id,n\nok,1\nw,2,3\n", 1, "wrong_column_count", None, id="csv-too-many"
    ),
    pytest.param(CSV, b"external_id,n\nw\nok,1\n", 0, "wrong_column_count", None, id="csv-too-few"),
    pytest.param(
        CSV,
        b"external_id,name\nok,Ann\nj,Jos\xe9\n",
        1,
        "invalid_utf8",
        None,
        id="csv-invalid-utf8",
    ),
    pytest.param(
        CSV,
        b"external_id,key\nok,k\nk," + b"k" * 256 + b"\n",
        1,
        "invalid",
        "k",
        id="csv-key-too-long",
    ),
    pytest.param(
        CSV, b"external_id,type,n\nok,,1\nt,no.such,2\n", 1, "invalid", "t", id="csv-bad-type"
    ),
]


@pytest.mark.parametrize(("content_type", "body", "index", "code", "external_id"), BAD_LINES)
def test_upload__bad_line_is_skipped_and_recorded_at_its_index(
    client_a, empty_batch, content_type, body, index, code, external_id
):
    response = upload(client_a, empty_batch, body, content_type)

    assert response.status_code == 200, response.content
    report = response.json()
    assert report["rejected"] == 1
    assert report["added"] == report["valid"] >= 1
    [error] = report["errors"]
    assert (error["index"], error["code"]) == (index, code)
    assert error.get("external_id") == external_id
    assert error["message"]
    assert all(item[1] == "ok" for item in items_of(empty_batch))
    recorded = BatchError.objects.get(batch=empty_batch)
    assert (recorded.index, recorded.code) == (index, code)
    assert counters(empty_batch)[3] == 1


@pytest.mark.parametrize(("content_type", "body", "index", "code", "external_id"), BAD_LINES)
def test_upload__bad_line_with_reject_adds_nothing(
    client_a, empty_batch, content_type, body, index, code, external_id
):
    problem = refused(client_a, empty_batch, body, content_type, on_error="reject")

    [error] = problem["errors"]
    assert (error["index"], error["code"]) == (index, code)
    assert error.get("external_id") == external_id


def test_upload__payload_over_the_size_limit_is_a_bad_line(client_a, empty_batch, settings):
    settings.BATCHSITE_MAX_PAYLOAD_BYTES = 50
    body = jsonl({"payload": {"s": "x" * 10}}, {"external_id": "big", "payload": {"s": "x" * 60}})

    response = upload(client_a, empty_batch, body, JSONL)

    [error] = response.json()["errors"]
    assert (error["index"], error["external_id"]) == (1, "big")
    assert "the limit is 50" in error["message"]


def test_upload__text_that_cannot_be_stored_is_a_bad_line(client_a, empty_batch):
    # JSON may escape a lone surrogate; it is not text the database can store.
    body = GOOD_LINE + b'{"external_id": "\\ud800", "payload": {}}\n' + GOOD_LINE

    response = upload(client_a, empty_batch, body, JSONL)

    assert response.status_code == 200, response.content
    report = response.json()
    assert (report["added"], report["rejected"]) == (2, 1)
    assert report["errors"][0]["index"] == 1


# --- files that hold no items, or cannot be read -------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSONL, b""),
        (JSONL, b"\n\r\n   \n"),
        (JSONL, b"\xef\xbb\xbf"),
        (CSV, b""),
        (CSV, b"external_id,n\n"),
        (CSV, b"\xef\xbb\xbfexternal_id,n\r\n"),
    ],
    ids=[
        "jsonl-empty",
        "jsonl-blank",
        "jsonl-bom-only",
        "csv-empty",
        "csv-header-only",
        "csv-bom-header",
    ],
)
def test_upload__file_without_items_is_400(client_a, empty_batch, content_type, body):
    problem = refused(client_a, empty_batch, body, content_type)

    assert "holds no items" in problem["detail"] or "empty" in problem["detail"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"external_id,n,n", "repeats n"),
        (b"external_id,,n", "empty column name"),
        (b"external_id,n,", "empty column name"),
        (b"external_id,\xffn", "not UTF-8"),
    ],
    ids=["duplicate", "empty", "trailing-empty", "invalid-utf8"],
)
def test_upload__csv_with_an_unusable_header_is_400(client_a, empty_batch, header, message):
    problem = refused(client_a, empty_batch, header + b"\na,1,2\n", CSV)

    assert error_fields(problem) == {"header"}
    assert any(message in error["message"] for error in problem["errors"])


# --- ZIP packages --------------------------------------------------------------------------------

OK = ("ok.txt", b"fine")

BAD_PACKAGES = [
    pytest.param(lambda: zip_data([OK, ("docs/", b"")]), 1, "directory", id="directory"),
    pytest.param(lambda: zip_data([OK, ("docs/a.txt", b"x")]), 1, "directory", id="nested"),
    pytest.param(lambda: zip_data([OK, ("../evil.txt", b"x")]), 1, "'..' path", id="dotdot"),
    pytest.param(lambda: zip_data([("/etc/passwd", b"x"), OK]), 0, "absolute", id="absolute"),
    pytest.param(
        lambda: zip_data([OK, (symlink_info("link"), b"/etc")]), 1, "symbolic", id="symlink"
    ),
    pytest.param(encrypted_zip_data, 1, "encrypted", id="encrypted"),
    pytest.param(lambda: zip_data([OK, ("b.txt", b"b"), OK]), 2, "duplicate", id="duplicate"),
]


@pytest.mark.parametrize(("make", "index", "message"), BAD_PACKAGES)
def test_upload__bad_zip_member_refuses_the_whole_package(
    client_a, file_batch, make, index, message
):
    problem = refused(client_a, file_batch, make(), ZIP)

    assert any(
        error.get("index") == index and message in error["message"] for error in problem["errors"]
    ), problem["errors"]


@pytest.mark.parametrize("on_error", ["skip", "reject"])
def test_upload__bad_zip_is_refused_whatever_on_error_says(client_a, file_batch, on_error):
    refused(client_a, file_batch, zip_data([OK, ("../x", b"x")]), ZIP, on_error=on_error)


def test_upload__zip_with_more_members_than_the_limit_is_400(client_a, file_batch, settings):
    settings.BATCHSITE_ZIP_MAX_MEMBERS = 3
    body = zip_data([(f"{n}.txt", b"x") for n in range(4)])

    problem = refused(client_a, file_batch, body, ZIP)

    assert error_fields(problem) == {"package"}


def test_upload__zip_with_members_at_the_limit_is_accepted(client_a, file_batch, settings):
    settings.BATCHSITE_ZIP_MAX_MEMBERS = 3

    response = upload(client_a, file_batch, zip_data([(f"{n}.txt", b"x") for n in range(3)]), ZIP)

    assert response.status_code == 200, response.content
    assert response.json()["added"] == 3


def test_upload__zip_bomb_is_400(client_a, file_batch, settings):
    settings.BATCHSITE_ZIP_MAX_UNCOMPRESSED = MB

    problem = refused(client_a, file_batch, bomb_data(10 * MB), ZIP)

    assert error_fields(problem) == {"package"}


def test_upload__zip_whose_header_lies_about_its_size_is_400(client_a, file_batch, settings):
    settings.BATCHSITE_ZIP_MAX_UNCOMPRESSED = MB
    body = lying_zip_data(real_size=4 * MB, declared=100)

    problem = refused(client_a, file_batch, body, ZIP)

    assert problem["errors"]


def test_upload__zip_for_a_type_without_files_is_400(client_a, empty_batch):
    problem = refused(client_a, empty_batch, zip_data([OK]), ZIP)

    assert error_fields(problem) == {"type"}


@pytest.mark.parametrize(
    "body",
    [b"", b"this is not a zip", b"PK\x03\x04" + b"\x00" * 40, zip_data([])],
    ids=["empty", "text", "bad-header", "no-members"],
)
def test_upload__not_a_zip_is_400(client_a, file_batch, body):
    refused(client_a, file_batch, body, ZIP)


def test_upload__zip_member_refused_as_an_item_leaves_no_file(client_a, file_batch):
    body = zip_data([OK, ("n" * 300, b"name too long for an external_id")])

    response = upload(client_a, file_batch, body, ZIP)

    assert response.status_code == 200, response.content
    assert (response.json()["added"], response.json()["rejected"]) == (1, 1)
    [input_file] = Item.objects.filter(batch=file_batch).values_list("input_file", flat=True)
    batch_dir = batch_files_dir(file_batch.pk)
    kept = (Path(django_settings.MEDIA_ROOT) / input_file).relative_to(batch_dir)
    assert files_of(file_batch) == [str(kept)]


# --- what is refused before reading ------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "binary/octet-stream",
        "multipart/form-data; boundary=x",
    ],
)
def test_upload__unsupported_content_type_is_415(client_a, empty_batch, content_type):
    problem = refused(
        client_a,
        empty_batch,
        jsonl({"payload": {}}),
        content_type,
        status=415,
        code="unsupported_media_type",
    )

    assert problem["detail"] == (
        f"cannot read {content_type}; send application/x-ndjson, application/json (an array "
        "of items), text/csv or application/zip, or application/octet-stream to have the "
        "format read from the body"
    )


# --- a body recognised by its content ------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "body", "job_type"), SNIFFED_FILES)
@pytest.mark.parametrize(
    "content_type", [OCTET_STREAM, "Application/Octet-Stream; charset=binary"], ids=["plain", "odd"]
)
def test_upload__octet_stream_is_read_by_its_content(
    client_a, account, content_type, fmt, body, job_type
):
    batch, _ = services.batch_create(account=account, actor="test", type=job_type)

    response = upload(client_a, batch, body, content_type)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "added": 2,
        "rejected": 0,
        "valid": 2,
        "dry_run": False,
        "format": fmt,
        "errors": [],
    }
    assert [item[1] for item in items_of(batch)] == ["a", "b"]
    assert counters(batch) == (Batch.Status.OPEN, 2, 2, 0)


@pytest.mark.parametrize("body", UNRECOGNISABLE)
def test_upload__octet_stream_of_no_known_format_is_415(client_a, empty_batch, body):
    problem = refused(
        client_a, empty_batch, body, OCTET_STREAM, status=415, code="unsupported_media_type"
    )

    assert problem["detail"] == (
        "cannot tell the format of the application/octet-stream body: it is none of JSON "
        "Lines, a JSON array of items, CSV (a header row of comma-separated column names) or ZIP"
    )


def test_upload__octet_stream_with_a_payload_must_be_a_zip(client_a, empty_batch):
    problem = refused(
        client_a, empty_batch, jsonl({"payload": {}}), OCTET_STREAM, payload='{"n": 1}'
    )

    assert error_fields(problem) == {"payload"}


def test_upload__json_array_adds_one_item_per_element(client_a, empty_batch):
    body = json.dumps(
        [
            {"external_id": "a", "key": "k-a", "payload": {"n": 0}},
            {"external_id": "b", "payload": {"fail": "yes"}},
            {"type": "test.flaky", "payload": {"n": 2}},
        ]
    ).encode()

    response = upload(client_a, empty_batch, body, JSON)

    assert response.status_code == 200, response.content
    report = response.json()
    assert (report["added"], report["rejected"], report["format"]) == (2, 1, "json")
    assert [(error["index"], error["external_id"]) for error in report["errors"]] == [(1, "b")]
    assert items_of(empty_batch) == [
        (0, "a", "k-a", "echo", {"n": 0}),
        (1, "", "", "test.flaky", {"n": 2}),
    ]
    # An item remembers its place in the file: the refused element left a gap.
    assert list(
        Item.objects.filter(batch=empty_batch).order_by("index").values_list("source_index")
    ) == [(0,), (2,)]
    assert counters(empty_batch) == (Batch.Status.OPEN, 2, 2, 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (jsonl({"payload": {}}, {"payload": {}}), "the body is not a JSON array of items"),
        (b'[{"payload": {}}, {"payload": {]', "item 1 of the JSON array is not JSON"),
        # More digits than Python turns into an int: a ValueError, not a JSONDecodeError.
        (
            b'[{"payload": {}}, {"payload": {"n": ' + b"1" * 5000 + b"}}]",
            "item 1 of the JSON array is not JSON: Exceeds the limit (4300 digits)",
        ),
    ],
    ids=["jsonl-sent-as-json", "syntax-error", "integer-too-long-for-python"],
)
def test_upload__json_that_is_not_a_clean_array_is_400(client_a, empty_batch, body, message):
    problem = refused(client_a, empty_batch, body, JSON)

    assert problem["detail"].startswith(message)


def test_upload__body_over_the_limit_by_content_length_is_413(client_a, empty_batch, settings):
    body = jsonl(*({"payload": {"n": n}} for n in range(10)))
    settings.BATCHSITE_MAX_UPLOAD_BYTES = len(body) - 1

    refused(client_a, empty_batch, body, JSONL, status=413, code="too_large")


def test_upload__body_over_the_limit_by_streamed_count_is_413(client_a, empty_batch, settings):
    body = jsonl(*({"payload": {"n": n}} for n in range(10)))
    settings.BATCHSITE_MAX_UPLOAD_BYTES = len(body) - 1
    before_rows, before_counters = row_counts(), counters(empty_batch)

    # A Content-Length the view cannot take at its word: the bytes are counted as they come.
    response = client_a.generic(
        "POST",
        batch_url(empty_batch, "upload/"),
        body,
        content_type=JSONL,
        CONTENT_LENGTH=f" {len(body)}",
    )

    assert_problem(response, 413, "too_large")
    assert_nothing_added(empty_batch, before_rows, before_counters)


def test_upload__body_at_the_limit_is_accepted(client_a, empty_batch, settings):
    body = jsonl(*({"payload": {"n": n}} for n in range(10)))
    settings.BATCHSITE_MAX_UPLOAD_BYTES = len(body)

    response = upload(client_a, empty_batch, body, JSONL)

    assert response.status_code == 200, response.content
    assert response.json()["added"] == 10


def test_upload__zip_over_the_size_limit_is_413(client_a, file_batch, settings):
    body = zip_data([OK])
    settings.BATCHSITE_MAX_UPLOAD_BYTES = len(body) - 1

    refused(client_a, file_batch, body, ZIP, status=413, code="too_large")


def test_upload__more_items_than_a_batch_holds_is_400(client_a, account, settings):
    settings.BATCHSITE_MAX_ITEMS_PER_BATCH = 4
    batch = open_batch(account=account, items=2)

    problem = refused(client_a, batch, jsonl(*({"payload": {}} for _ in range(3))), JSONL)

    assert error_fields(problem) == {"file"}


def test_upload__more_zip_items_than_a_batch_holds_leaves_no_files(client_a, file_batch, settings):
    settings.BATCHSITE_MAX_ITEMS_PER_BATCH = 1

    problem = refused(client_a, file_batch, zip_data([OK, ("b.txt", b"b")]), ZIP)

    assert error_fields(problem) == {"file"}


@pytest.mark.parametrize("action", ["commit", "cancel"])
def test_upload__to_a_closed_batch_is_409(
    client_a, account, django_capture_on_commit_callbacks, action
):
    batch = open_batch(account=account)
    with django_capture_on_commit_callbacks(execute=False):
        assert client_a.post(batch_url(batch, f"{action}/")).status_code == 200

    refused(client_a, batch, jsonl({"payload": {}}), JSONL, status=409, code="batch_not_open")


def test_upload__to_another_accounts_batch_is_404(client_a, client_b, account):
    batch = open_batch(account=account, items=1)

    refused(client_b, batch, jsonl({"payload": {}}), JSONL, status=404, code="not_found")


def test_upload__without_a_key_is_401(account):
    from rest_framework.test import APIClient

    batch = open_batch(account=account, items=1)

    refused(APIClient(), batch, jsonl({"payload": {}}), JSONL, status=401, code="not_authenticated")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"on_error": "ignore"}, "on_error"),
        ({"dry_run": "perhaps"}, "dry_run"),
        ({"csv_types": "guess"}, "csv_types"),
    ],
)
def test_upload__bad_query_parameter_is_400(client_a, empty_batch, params, field):
    problem = refused(client_a, empty_batch, jsonl({"payload": {}}), JSONL, **params)

    assert field in error_fields(problem)


# --- one transaction -----------------------------------------------------------------------------


@pytest.fixture
def crash_on_second_group(monkeypatch):
    """Make the second group of item rows fail to insert, after the first was written."""
    monkeypatch.setattr(services.items, "INSERT_GROUP", 2)
    real_insert = bulk.items_insert
    calls = []

    def insert(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real_insert(**kwargs)

    monkeypatch.setattr(bulk, "items_insert", insert)
    return calls


def test_upload__crash_half_way_adds_nothing(client_a, account, crash_on_second_group):
    batch = open_batch(account=account, items=2)
    before_rows, before_counters = row_counts(), counters(batch)
    body = b"{bad\n" + jsonl(*({"external_id": f"e{n}", "payload": {}} for n in range(5)))

    response = upload(client_a, batch, body, JSONL)

    # The crash answers a bare 500 problem document; the transaction rolled back first.
    assert response.status_code == 500
    assert response.json()["code"] == "server_error"
    assert b"disk full" not in response.content

    assert len(crash_on_second_group) == 2
    assert_nothing_added(batch, before_rows, before_counters)
    assert Item.objects.filter(batch=batch).count() == 2
    assert not BatchError.objects.filter(batch=batch).exists()


def test_upload__crash_half_way_through_a_zip_leaves_no_files(
    client_a, file_batch, crash_on_second_group
):
    before_rows, before_counters = row_counts(), counters(file_batch)
    body = zip_data([(f"{n}.txt", b"x" * n) for n in range(5)])

    response = upload(client_a, file_batch, body, ZIP)

    # The crash answers a bare 500 problem document; the transaction rolled back first.
    assert response.status_code == 500
    assert response.json()["code"] == "server_error"
    assert b"disk full" not in response.content

    assert len(crash_on_second_group) == 2
    assert_nothing_added(file_batch, before_rows, before_counters)
