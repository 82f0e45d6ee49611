"""Tests for batches.exports through the API: item exports, the errors CSV and packages."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from batches import engine, exports, services
from batches.ingest import bulk
from batches.models import Batch, BatchError, BatchEvent, Chunk, Item
from tests.helpers.api import (
    JSONL,
    ZIP,
    assert_problem,
    batch_url,
    create_batch,
    run_commit,
    upload,
)
from tests.helpers.files import batch_files_dir, zip_data

# --- helpers --------------------------------------------------------------------------------------


def body_of(response) -> bytes:
    assert response.streaming, "exports are streamed"
    return b"".join(response.streaming_content)


def jsonl_rows(response) -> list[dict]:
    return [json.loads(line) for line in body_of(response).splitlines()]


def csv_rows(response) -> tuple[list[str], list[dict]]:
    reader = csv.reader(io.StringIO(body_of(response).decode("utf-8")))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def open_package(response) -> zipfile.ZipFile:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == ZIP
    return zipfile.ZipFile(io.BytesIO(body_of(response)))


@pytest.fixture
def finished_batch(client_a, django_capture_on_commit_callbacks) -> Batch:
    """A finished echo batch: items 0, 2, 3 succeed, item 1 fails."""
    items = [
        {"external_id": "e0", "key": "k0", "payload": {"n": 0}},
        {"external_id": "e1", "key": "k1", "payload": {"n": 1, "fail": True}},
        {"external_id": "e2", "payload": {"n": 2, "text": 'quote " and, comma'}},
        {"payload": {"n": 3, "nested": {"a": [1, 2]}}},
    ]
    batch = create_batch(client_a, items=items)
    batch = run_commit(client_a, batch, django_capture_on_commit_callbacks)
    assert batch.status == Batch.Status.FINISHED
    return batch


# --- item exports ---------------------------------------------------------------------------------


def test_export__jsonl_streams_every_item_with_every_field(client_a, finished_batch):
    response = client_a.get(batch_url(finished_batch, "export/?format=jsonl"))

    assert response.status_code == 200
    assert response["Content-Type"] == JSONL
    assert response["Content-Disposition"] == (
        f'attachment; filename="batch-{finished_batch.number}-items.jsonl"'
    )
    rows = jsonl_rows(response)
    assert [row["index"] for row in rows] == [0, 1, 2, 3]
    assert all(list(row) == exports.ITEM_FIELDS for row in rows)
    assert [(r["external_id"], r["key"], r["type"], r["status"]) for r in rows] == [
        ("e0", "k0", "echo", "succeeded"),
        ("e1", "k1", "echo", "failed"),
        ("e2", "", "echo", "succeeded"),
        ("", "", "echo", "succeeded"),
    ]
    assert rows[0]["result"] == {"n": 0}
    assert rows[2]["result"] == {"n": 2, "text": 'quote " and, comma'}
    assert rows[3]["result"] == {"n": 3, "nested": {"a": [1, 2]}}
    assert rows[1]["result"] is None
    assert rows[1]["error_code"] != ""
    assert rows[1]["error_message"] != ""
    assert rows[0]["error_code"] == rows[0]["error_message"] == ""
    item = Item.objects.get(batch=finished_batch, index=1)
    assert rows[1]["error_code"] == item.error_code
    assert rows[1]["attempts"] == item.attempts == 1
    assert rows[1]["started_at"] == item.started_at.isoformat()
    assert rows[1]["finished_at"] == item.finished_at.isoformat()


def test_export__format_defaults_to_jsonl(client_a, finished_batch):
    response = client_a.get(batch_url(finished_batch, "export/"))

    assert response["Content-Type"] == JSONL
    assert len(jsonl_rows(response)) == 4


def test_export__csv_streams_every_item_with_a_header(client_a, finished_batch):
    response = client_a.get(batch_url(finished_batch, "export/?format=csv"))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == (
        f'attachment; filename="batch-{finished_batch.number}-items.csv"'
    )
    header, rows = csv_rows(response)
    assert header == exports.ITEM_FIELDS
    assert [row["index"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["status"] for row in rows] == ["succeeded", "failed", "succeeded", "succeeded"]
    assert json.loads(rows[2]["result"]) == {"n": 2, "text": 'quote " and, comma'}
    assert json.loads(rows[3]["result"]) == {"n": 3, "nested": {"a": [1, 2]}}
    assert rows[1]["result"] == ""
    assert rows[1]["error_message"] != ""
    item = Item.objects.get(batch=finished_batch, index=0)
    assert rows[0]["finished_at"] == item.finished_at.isoformat()
    assert rows[0]["attempts"] == "1"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["failed"], [1]),
        (["succeeded"], [0, 2, 3]),
        (["failed", "succeeded"], [0, 1, 2, 3]),
        (["cancelled", "failed"], [1]),
        (["pending"], []),
    ],
)
def test_export__status_filter_takes_several_statuses(
    client_a, finished_batch, fmt, statuses, expected
):
    query = "&".join(f"status={status}" for status in statuses)

    response = client_a.get(batch_url(finished_batch, f"export/?format={fmt}&{query}"))

    assert response.status_code == 200
    rows = jsonl_rows(response) if fmt == "jsonl" else csv_rows(response)[1]
    assert [int(row["index"]) for row in rows] == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("format=xml", "format"),
        ("format=json", "format"),
        ("status=done", "status"),
        ("status=failed&status=bogus", "status"),
    ],
)
def test_export__bad_format_or_status_is_400(client_a, finished_batch, query, field):
    response = client_a.get(batch_url(finished_batch, f"export/?{query}"))

    body = assert_problem(response, 400, "invalid")
    assert [error["field"] for error in body["errors"]] == [field]


def test_export__another_accounts_batch_is_404(client_b, finished_batch):
    response = client_b.get(batch_url(finished_batch, "export/"))

    assert_problem(response, 404, "not_found")


def test_export__empty_batch_gives_an_empty_export(client_a):
    batch = create_batch(client_a)

    jsonl = client_a.get(batch_url(batch, "export/"))
    header, rows = csv_rows(client_a.get(batch_url(batch, "export/?format=csv")))

    assert body_of(jsonl) == b""
    assert header == exports.ITEM_FIELDS
    assert rows == []


def half_run(client, *, atomic: bool) -> Batch:
    """Commit a 150-item test.flaky batch (two chunks) and run only its first chunk."""
    batch = create_batch(
        client,
        type="test.flaky",
        items=[{"payload": {"n": n}} for n in range(150)],
        options={"atomic": atomic},
        commit=True,
    )
    first = Chunk.objects.filter(batch_id=batch["id"]).order_by("start_index").first()
    assert engine.chunk_process(chunk_id=first.pk) == "done"
    batch = Batch.objects.get(pk=batch["id"])
    assert batch.status == Batch.Status.RUNNING
    assert batch.succeeded_items == 100
    return batch


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export__atomic_batch_not_finished_hides_results(client_a, fmt):
    batch = half_run(client_a, atomic=True)

    response = client_a.get(batch_url(batch, f"export/?format={fmt}&status=succeeded"))

    rows = jsonl_rows(response) if fmt == "jsonl" else csv_rows(response)[1]
    assert len(rows) == 100
    assert {row["status"] for row in rows} == {"succeeded"}
    assert {row["result"] for row in rows} == ({None} if fmt == "jsonl" else {""})


def test_export__atomic_batch_shows_results_once_finished(client_a):
    batch = half_run(client_a, atomic=True)
    second = Chunk.objects.filter(batch=batch).order_by("start_index").last()
    engine.chunk_process(chunk_id=second.pk)
    batch.refresh_from_db()
    assert batch.status == Batch.Status.FINISHED

    rows = jsonl_rows(client_a.get(batch_url(batch, "export/")))

    assert [row["result"] for row in rows] == [{"n": n} for n in range(150)]


def test_export__non_atomic_running_batch_shows_results(client_a):
    batch = half_run(client_a, atomic=False)

    rows = jsonl_rows(client_a.get(batch_url(batch, "export/?status=succeeded")))

    assert [row["result"] for row in rows] == [{"n": n} for n in range(100)]


# --- errors CSV -----------------------------------------------------------------------------------


def test_errors_csv__streams_every_error_of_an_upload(client_a):
    batch = create_batch(client_a)
    bad = set(range(0, 4500, 2))  # 2,250 bad lines: more than one page of errors
    lines = ["{broken" if n in bad else json.dumps({"payload": {"n": n}}) for n in range(4500)]
    report = upload(client_a, batch, ("\n".join(lines) + "\n").encode(), JSONL)
    assert report["rejected"] == len(bad)

    response = client_a.get(batch_url(batch, "errors/?format=csv"))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    number = Batch.objects.get(pk=batch["id"]).number
    assert response["Content-Disposition"] == f'attachment; filename="batch-{number}-errors.csv"'
    header, rows = csv_rows(response)
    assert header == exports.ERROR_FIELDS
    assert [int(row["index"]) for row in rows] == sorted(bad)
    assert {row["code"] for row in rows} == {"invalid_json"}
    assert all("not JSON" in row["message"] for row in rows)
    assert all(row["created_at"] for row in rows)
    assert len(rows) == BatchError.objects.filter(batch_id=batch["id"]).count()


def test_errors_csv__names_external_ids_of_refused_items(client_a):
    batch = create_batch(client_a)
    lines = [
        {"external_id": "good", "payload": {}},
        {"external_id": "bad-payload", "payload": "not an object"},
    ]
    upload(client_a, batch, "\n".join(json.dumps(line) for line in lines).encode(), JSONL)

    _, rows = csv_rows(client_a.get(batch_url(batch, "errors/?format=csv")))

    assert [(row["index"], row["external_id"]) for row in rows] == [("1", "bad-payload")]


def test_errors__json_stays_the_default(client_a):
    batch = create_batch(client_a)
    upload(client_a, batch, b'{"payload": {}}\n{oops\n', JSONL)

    response = client_a.get(batch_url(batch, "errors/"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert [error["index"] for error in response.json()["results"]] == [1]


def test_errors__unknown_format_is_400(client_a):
    batch = create_batch(client_a)

    response = client_a.get(batch_url(batch, "errors/?format=xlsx"))

    assert_problem(response, 400, "invalid")


# --- a large export -------------------------------------------------------------------------------

LARGE = 200_000
# The export of LARGE items is about 90 MB; holding it (or its rows) would pass this bound.
MEMORY_BOUND = 60 * 1024 * 1024


@pytest.fixture
def large_batch(account) -> Batch:
    batch, _ = services.batch_create(account=account, actor="test")
    padding = "x" * 150
    rows = (
        (n, f"external-{n:07d}-{padding}", f"key-{n:07d}-{padding}", "echo", '{"n":1}', "")
        for n in range(LARGE)
    )
    while group := list(itertools.islice(rows, 10_000)):
        bulk.items_insert(batch_id=batch.pk, rows=group)
    return batch


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export__200000_items_stream_in_bounded_memory(client_a, large_batch, fmt):
    lines = 0
    size = 0
    first = last = b""
    tracemalloc.start()
    try:
        response = client_a.get(batch_url(large_batch, f"export/?format={fmt}"))
        for chunk in response.streaming_content:
            lines += chunk.count(b"\n")
            size += len(chunk)
            if chunk and not first:
                first = chunk[:2000]
            if chunk:
                last = chunk[-2000:]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 200
    expected_lines = LARGE + (1 if fmt == "csv" else 0)
    assert lines == expected_lines
    assert size > MEMORY_BOUND, "the export must be larger than the bound to prove anything"
    assert peak < MEMORY_BOUND, f"peak {peak / 2**20:.1f} MB while streaming"
    if fmt == "jsonl":
        assert json.loads(first.split(b"\n")[0])["index"] == 0
        assert json.loads(last.rstrip(b"\n").rsplit(b"\n", 1)[-1])["index"] == LARGE - 1
    else:
        assert first.split(b"\r\n")[1].startswith(b"0,external-0000000-")
        assert last.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].startswith(f"{LARGE - 1},".encode())


# --- packages -------------------------------------------------------------------------------------


def stamp_batch(client, files: dict[str, bytes], **body) -> dict:
    batch = create_batch(client, type="test.stamp", **body)
    report = upload(client, batch, zip_data(files))
    assert report["added"] == len(files)
    return batch


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_package__is_409_until_the_batch_ends(client_a, django_capture_on_commit_callbacks):
    batch = stamp_batch(client_a, {"a.txt": b"alpha"})

    while_open = client_a.get(batch_url(batch, "package/"))
    client_a.post(batch_url(batch, "commit/"))  # committed; workers not run
    while_committed = client_a.get(batch_url(batch, "package/"))

    assert_problem(while_open, 409, "batch_not_finished")
    assert_problem(while_committed, 409, "batch_not_finished")


def test_package__holds_every_output_and_a_manifest_that_matches(
    client_a, django_capture_on_commit_callbacks
):
    files = {"a.txt": b"alpha", "b.pdf": b"%PDF-1.4 beta" * 1000, "c": b""}
    batch = stamp_batch(client_a, files)
    finished = run_commit(client_a, batch, django_capture_on_commit_callbacks)
    assert finished.status == Batch.Status.FINISHED

    response = client_a.get(batch_url(batch, "package/"))

    assert response["Content-Disposition"] == (
        f'attachment; filename="batch-{finished.number}-package.zip"'
    )
    archive = open_package(response)
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == ["a.txt.stamp", "b.pdf.stamp", "c.stamp", "manifest.json"]
    for name, data in files.items():
        assert archive.read(f"{name}.stamp").decode() == sha256(data)
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["batch"] == str(finished.pk)
    assert manifest["number"] == finished.number
    assert manifest["status"] == "finished"
    assert sorted(entry["name"] for entry in manifest["files"]) == [
        "a.txt.stamp",
        "b.pdf.stamp",
        "c.stamp",
    ]
    for entry in manifest["files"]:
        member = archive.read(entry["name"])
        assert entry["sha256"] == sha256(member)
        assert entry["bytes"] == len(member)
    by_name = {entry["name"]: entry for entry in manifest["files"]}
    assert by_name["a.txt.stamp"]["external_id"] == "a.txt"
    assert by_name["a.txt.stamp"]["index"] == 0


def package_names(client, batch) -> list[str]:
    archive = open_package(client.get(batch_url(batch, "package/")))
    names = archive.namelist()
    manifest = json.loads(archive.read("manifest.json"))
    assert sorted(entry["name"] for entry in manifest["files"]) == sorted(
        name for name in names if name != "manifest.json"
    )
    return names


def test_package__outputs_with_the_same_name_get_distinct_names(
    client_a, django_capture_on_commit_callbacks
):
    batch = stamp_batch(client_a, {"doc.txt": b"first"})
    upload(client_a, batch, zip_data({"doc.txt": b"second"}))
    run_commit(client_a, batch, django_capture_on_commit_callbacks)

    names = package_names(client_a, batch)
    archive = open_package(client_a.get(batch_url(batch, "package/")))

    assert len(names) == len(set(names)) == 3
    stamps = sorted(archive.read(name).decode() for name in names if name != "manifest.json")
    assert stamps == sorted([sha256(b"first"), sha256(b"second")])
    assert "doc.txt.stamp" in names


def test_package__a_renamed_output_never_takes_a_name_already_used(
    client_a, django_capture_on_commit_callbacks
):
    # Item 2's output is renamed "2-doc.txt.stamp", which item 1's output already is.
    batch = stamp_batch(client_a, {"doc.txt": b"zero", "2-doc.txt": b"one"})
    upload(client_a, batch, zip_data({"doc.txt": b"two"}))
    run_commit(client_a, batch, django_capture_on_commit_callbacks)

    names = package_names(client_a, batch)

    assert len(names) == 4
    assert len(set(names)) == 4, names


@pytest.mark.parametrize("name", ["manifest.json", "MANIFEST.json"])
def test_package__an_output_named_like_the_manifest_never_shadows_it(
    client_a, django_capture_on_commit_callbacks, name
):
    # As document.sign would write, signing a tenant's member called manifest.json.
    batch = stamp_batch(client_a, {"x.txt": b"tenant"})
    run_commit(client_a, batch, django_capture_on_commit_callbacks)
    item = Item.objects.get(batch_id=batch["id"])
    item.output_files = [{**item.output_files[0], "name": name}]
    item.save(update_fields=["output_files"])

    archive = open_package(client_a.get(batch_url(batch, "package/")))

    assert sorted(archive.namelist()) == sorted(["manifest.json", f"0-1-{name}"])
    assert json.loads(archive.read("manifest.json"))["batch"] == batch["id"]
    assert archive.read(f"0-1-{name}").decode() == sha256(b"tenant")


def test_package__after_delete_is_404_and_the_files_are_gone(
    client_a, django_capture_on_commit_callbacks
):
    batch = stamp_batch(client_a, {"a.txt": b"alpha"})
    run_commit(client_a, batch, django_capture_on_commit_callbacks)
    files_dir = Path(django_settings.MEDIA_ROOT) / "batches" / batch["id"]
    assert (files_dir / "in").is_dir()
    assert (files_dir / "out").is_dir()
    assert client_a.get(batch_url(batch, "package/")).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        deleted = client_a.delete(batch_url(batch))

    assert deleted.status_code == 204
    assert_problem(client_a.get(batch_url(batch, "package/")), 404, "not_found")
    assert_problem(client_a.get(batch_url(batch, "export/")), 404, "not_found")
    assert not files_dir.exists()


def test_package__failed_atomic_batch_has_no_outputs_and_no_package(
    client_a, django_capture_on_commit_callbacks
):
    batch = stamp_batch(client_a, {"a.txt": b"alpha", "b.txt": b"beta"}, options={"atomic": True})
    added = client_a.post(
        batch_url(batch, "items/"), {"type": "echo", "payload": {"fail": True}}, format="json"
    )
    assert added.status_code == 201, added.content

    failed = run_commit(client_a, batch, django_capture_on_commit_callbacks)

    assert failed.status == Batch.Status.FAILED
    discarded = BatchEvent.objects.get(batch=failed, kind="results_discarded")
    assert discarded.detail == {"items": 2}  # both stamps were written, then thrown away
    assert_problem(client_a.get(batch_url(batch, "package/")), 409, "results_hidden")
    assert not (batch_files_dir(failed.pk) / "out").exists()


# --- no formulas in CSV ---------------------------------------------------------------------------

FORMULA = '=HYPERLINK("http://attacker.example/","click")'


@pytest.fixture
def formula_batch(client_a, django_capture_on_commit_callbacks) -> Batch:
    """A finished batch whose external ids look like spreadsheet formulas."""
    batch = create_batch(client_a)
    ids = [FORMULA, "+1+1", "-2", "@SUM(A1)", "\tTAB", "\rCR", "plain"]
    response = client_a.post(
        batch_url(batch, "items/"),
        [{"external_id": external_id, "payload": {"n": n}} for n, external_id in enumerate(ids)],
        format="json",
    )
    assert response.status_code == 201, response.content
    return run_commit(client_a, batch, django_capture_on_commit_callbacks)


EXPECTED_CELLS = ["'" + FORMULA, "'+1+1", "'-2", "'@SUM(A1)", "'\tTAB", "'\rCR", "plain"]


def test_export__csv_cells_never_start_a_formula(client_a, formula_batch):
    _, rows = csv_rows(client_a.get(batch_url(formula_batch, "export/?format=csv")))

    assert [row["external_id"] for row in rows] == EXPECTED_CELLS


def test_export__jsonl_keeps_the_values_as_they_came(client_a, formula_batch):
    rows = jsonl_rows(client_a.get(batch_url(formula_batch, "export/?format=jsonl")))

    assert rows[0]["external_id"] == FORMULA
    assert rows[2]["external_id"] == "-2"


def test_errors_csv__cells_never_start_a_formula(client_a):
    batch = create_batch(client_a)
    line = {"external_id": FORMULA, "payload": "not an object"}
    upload(client_a, batch, json.dumps(line).encode(), JSONL)

    _, rows = csv_rows(client_a.get(batch_url(batch, "errors/?format=csv")))

    assert [row["external_id"] for row in rows] == ["'" + FORMULA]


def test_dashboard_download__items_csv_cells_never_start_a_formula(staff, formula_batch):
    response = staff.get(reverse("dashboard:batch-download", args=[formula_batch.pk, "items.csv"]))

    _, rows = csv_rows(response)
    assert [row["external_id"] for row in rows] == EXPECTED_CELLS
