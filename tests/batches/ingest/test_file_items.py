"""File items: one file per multipart POST items/file/ (or items/, for older clients), and a
payload for every ZIP member."""

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from batches.models import Batch, Item
from tests.helpers.api import assert_problem

pytestmark = pytest.mark.django_db


def stamp_batch(client) -> dict:
    return client.post("/api/v1/batches/", {"type": "test.stamp"}, format="json").json()


@pytest.fixture(params=["items/file/", "items/"])
def file_route(request) -> str:
    """Where a file item is posted: its own operation, and items/, which old clients use."""
    return request.param


def test_file_item_add__multipart_file_becomes_an_item_named_after_it(client_a, file_route):
    batch = stamp_batch(client_a)

    response = client_a.post(
        f"/api/v1/batches/{batch['id']}/{file_route}",
        {"file": SimpleUploadedFile("report.pdf", b"%PDF-1.7 hello"), "payload": '{"n": 1}'},
        format="multipart",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["added"] == 1
    item = Item.objects.get(batch_id=batch["id"])
    assert (item.index, item.external_id, item.key, item.payload) == (
        0,
        "report.pdf",
        "report.pdf",
        {"n": 1},
    )
    stored = Path(settings.MEDIA_ROOT) / item.input_file
    assert stored.read_bytes() == b"%PDF-1.7 hello"
    assert stored.name != "report.pdf"  # stored under a random name
    assert Batch.objects.get(pk=batch["id"]).status == Batch.Status.OPEN


def test_file_item_add__external_id_and_key_can_be_given(client_a, file_route):
    batch = stamp_batch(client_a)

    client_a.post(
        f"/api/v1/batches/{batch['id']}/{file_route}",
        {"file": SimpleUploadedFile("a.txt", b"x"), "external_id": "doc-7", "key": "k7"},
        format="multipart",
    )

    item = Item.objects.get(batch_id=batch["id"])
    assert (item.external_id, item.key) == ("doc-7", "k7")


def test_file_item_add__type_without_files_is_refused_and_leaves_nothing(client_a, file_route):
    batch = client_a.post("/api/v1/batches/", {}, format="json").json()  # echo takes no files

    response = client_a.post(
        f"/api/v1/batches/{batch['id']}/{file_route}",
        {"file": SimpleUploadedFile("a.txt", b"x")},
        format="multipart",
    )

    assert_problem(response, 400, "invalid")
    assert not Item.objects.filter(batch_id=batch["id"]).exists()
    inputs = Path(settings.MEDIA_ROOT) / "batches" / batch["id"] / "in"
    assert not inputs.exists() or not any(inputs.iterdir())


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"payload": "[1, 2]"}, "payload"),
        ({"payload": "{not json"}, "payload"),
        ({"surprise": "1"}, "surprise"),
        ({}, "file"),
    ],
)
def test_file_item_add__bad_fields_are_400(client_a, file_route, fields, field):
    batch = stamp_batch(client_a)
    body = {"file": SimpleUploadedFile("a.txt", b"x"), **fields} if field != "file" else {"x": "1"}

    response = client_a.post(
        f"/api/v1/batches/{batch['id']}/{file_route}", body, format="multipart"
    )

    problem = assert_problem(response, 400, "invalid")
    assert any(
        error["field"].startswith(field) or error["field"] == "x" for error in problem["errors"]
    )
    assert not Item.objects.filter(batch_id=batch["id"]).exists()


def test_file_item_add__over_the_upload_limit_is_413(client_a, file_route, settings):
    settings.BATCHSITE_MAX_UPLOAD_BYTES = 10
    batch = stamp_batch(client_a)

    response = client_a.post(
        f"/api/v1/batches/{batch['id']}/{file_route}",
        {"file": SimpleUploadedFile("big.bin", b"x" * 11)},
        format="multipart",
    )

    assert_problem(response, 413, "too_large")


def test_file_item_add__runs_through_the_job_type(
    client_a, file_route, django_capture_on_commit_callbacks
):
    batch = stamp_batch(client_a)
    client_a.post(
        f"/api/v1/batches/{batch['id']}/{file_route}",
        {"file": SimpleUploadedFile("a.txt", b"hello")},
        format="multipart",
    )

    with django_capture_on_commit_callbacks(execute=True):
        client_a.post(f"/api/v1/batches/{batch['id']}/commit/")

    item = Item.objects.get(batch_id=batch["id"])
    assert item.status == Item.Status.SUCCEEDED
    assert (
        item.result["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )


def test_file_item_add__its_own_route_takes_only_a_multipart_form(client_a):
    batch = stamp_batch(client_a)
    url = f"/api/v1/batches/{batch['id']}/items/file/"

    as_json = client_a.post(url, {"payload": {}}, format="json")
    as_bytes = client_a.generic("POST", url, b"hello", content_type="application/octet-stream")

    assert_problem(as_json, 415, "unsupported_media_type")
    assert_problem(as_bytes, 415, "unsupported_media_type")
    assert not Item.objects.filter(batch_id=batch["id"]).exists()


@pytest.mark.parametrize(
    ("caller", "status", "code"),
    [("client_b", 404, "not_found"), ("anonymous", 401, "not_authenticated")],
)
def test_file_item_add__only_the_batchs_account_may_add(request, client_a, caller, status, code):
    batch = stamp_batch(client_a)
    client = APIClient() if caller == "anonymous" else request.getfixturevalue(caller)

    response = client.post(
        f"/api/v1/batches/{batch['id']}/items/file/",
        {"file": SimpleUploadedFile("a.txt", b"x")},
        format="multipart",
    )

    assert_problem(response, status, code)
    assert not Item.objects.filter(batch_id=batch["id"]).exists()


def test_file_item_add__a_committed_batch_refuses_it(client_a):
    batch = stamp_batch(client_a)
    url = f"/api/v1/batches/{batch['id']}/items/file/"
    client_a.post(url, {"file": SimpleUploadedFile("a.txt", b"x")}, format="multipart")
    client_a.post(f"/api/v1/batches/{batch['id']}/commit/")

    response = client_a.post(url, {"file": SimpleUploadedFile("b.txt", b"y")}, format="multipart")

    assert_problem(response, 409, "batch_not_open")
    assert Item.objects.filter(batch_id=batch["id"]).count() == 1


def zip_of(**members: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_upload__zip_payload_goes_to_every_member(client_a):
    batch = stamp_batch(client_a)
    payload = json.dumps({"sizes": [[10, 10]]})

    response = client_a.generic(
        "POST",
        f"/api/v1/batches/{batch['id']}/upload/?payload={payload}",
        zip_of(**{"a.txt": b"a", "b.txt": b"b"}),
        content_type="application/zip",
    )

    assert response.status_code == 200, response.json()
    payloads = list(Item.objects.filter(batch_id=batch["id"]).values_list("payload", flat=True))
    assert payloads == [{"sizes": [[10, 10]]}, {"sizes": [[10, 10]]}]


@pytest.mark.parametrize("payload", ["[1]", "{bad", "3"])
def test_upload__zip_payload_that_is_not_an_object_is_400(client_a, payload):
    batch = stamp_batch(client_a)

    response = client_a.generic(
        "POST",
        f"/api/v1/batches/{batch['id']}/upload/?payload={payload}",
        zip_of(**{"a.txt": b"a"}),
        content_type="application/zip",
    )

    assert_problem(response, 400, "invalid")
    assert not Item.objects.filter(batch_id=batch["id"]).exists()


def test_upload__payload_with_jsonl_is_400(client_a):
    batch = client_a.post("/api/v1/batches/", {}, format="json").json()

    response = client_a.generic(
        "POST",
        f"/api/v1/batches/{batch['id']}/upload/?payload={{}}",
        b'{"payload": {}}\n',
        content_type="application/x-ndjson",
    )

    assert_problem(response, 400, "invalid")
