"""The document-signing dialect under /compat/signing/, exercised as that API's client would.

A client creates a batch for a process, uploads a ZIP package as an octet stream, accepts
the batch, polls its status, downloads the signed package and deletes the batch. Errors
answer `{"error": "..."}`. django-q2 runs in sync mode, so signing runs inline when the
accept's transaction commits (django_capture_on_commit_callbacks(execute=True)).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from batches import services
from batches.models import Batch, Item

API = "/compat/signing/api"
OCTETS = "application/octet-stream"
DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
DOCUMENTS = {
    "contract.pdf": b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n",
    "letter.txt": b"Dear client,\r\nplease sign.\n",
}


@pytest.fixture(autouse=True)
def files(settings, tmp_path):
    """Give each test its own files folder and signer (document.sign needs one to take items)."""
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.BATCHSITE_SIGNING_KEY = tmp_path / "signer" / "key.pem"
    settings.BATCHSITE_SIGNING_CERT = tmp_path / "signer" / "cert.pem"
    call_command("createsigningkey", stdout=io.StringIO())


@pytest.fixture
def signer(settings):
    """Make the site's signer with createsigningkey."""
    call_command("createsigningkey", "--force", stdout=io.StringIO())


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def create(client, process_id="7") -> dict:
    response = client.post(f"{API}/CreateBatch/{process_id}")
    assert response.status_code == 201, response.content
    return response.json()


def upload(client, batch_id, body: bytes, **headers):
    return client.generic("POST", f"{API}/upload/{batch_id}", body, OCTETS, **headers)


def status_of(client, batch_id) -> dict:
    response = client.get(f"{API}/BatchStatus/{batch_id}")
    assert response.status_code == 200, response.content
    return response.json()


def accept(client, batch_id, capture):
    with capture(execute=True):
        return client.post(f"{API}/AcceptBatch?batchId={batch_id}")


def uploaded_batch(client) -> int:
    """Create a batch with DOCUMENTS uploaded; return its id."""
    batch_id = int(create(client)["id"])
    assert upload(client, batch_id, zip_of(DOCUMENTS)).status_code == 202
    return batch_id


def assert_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": message}


# --- the whole life of a batch -------------------------------------------------------------------


def test_signing__create_upload_accept_poll_download_delete(
    client_a, signer, tmp_path, django_capture_on_commit_callbacks
):
    created = create(client_a, "42")
    assert set(created) == {"id", "providerSettingsId", "creationDate", "status"}
    assert created["id"].isdigit()
    assert created["providerSettingsId"] == "1"
    assert created["status"] == "0"
    assert DATE.match(created["creationDate"])
    batch_id = int(created["id"])
    assert status_of(client_a, batch_id) == {
        "id": batch_id,
        "status": "NEW",
        "creationDate": created["creationDate"],
        "documents": [],
    }

    package = zip_of(DOCUMENTS)
    response = upload(
        client_a, batch_id, package, HTTP_CONTENT_DISPOSITION='attachment; filename="deal.zip"'
    )

    assert response.status_code == 202, response.content
    record = response.json()
    assert record["id"].isdigit()
    assert DATE.match(record["creationDate"])
    assert record == {
        "id": record["id"],
        "counterpartyId": None,
        "name": "deal.zip",
        "signed": "false",
        "hash": hashlib.sha256(package).hexdigest(),
        "signature": None,
        "batchId": batch_id,
        "creationDate": record["creationDate"],
        "isZip": "true",
        "tsaId": None,
    }
    uploaded = status_of(client_a, batch_id)
    assert uploaded["status"] == "UPLOADED"
    assert [doc["fileName"] for doc in uploaded["documents"]] == list(DOCUMENTS)
    for doc in uploaded["documents"]:
        assert doc["id"].isdigit()
        assert (doc["signed"], doc["signingResult_Success"]) == ("false", "false")

    response = accept(client_a, batch_id, django_capture_on_commit_callbacks)

    assert response.status_code == 202, response.content
    assert response.json() == {
        "id": batch_id,
        "providerSettingsId": "1",
        "creationDate": created["creationDate"],
        "status": "2",
    }
    closed = status_of(client_a, batch_id)
    assert closed["status"] == "CLOSED"
    assert closed["documents"] == [
        {**doc, "signed": "true", "signingResult_Success": "true"} for doc in uploaded["documents"]
    ]

    response = client_a.get(f"{API}/batchfile/{batch_id}", HTTP_ACCEPT=OCTETS)

    assert response.status_code == 200
    assert response["Content-Type"] == OCTETS
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    expected = {*DOCUMENTS, *(f"{name}.p7s" for name in DOCUMENTS), "manifest.json"}
    assert set(archive.namelist()) == expected
    archive.extractall(tmp_path / "signed")
    for name, data in DOCUMENTS.items():
        assert archive.read(name) == data
        checked = subprocess.run(
            ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-noverify",
             "-content", str(tmp_path / "signed" / name),
             "-in", str(tmp_path / "signed" / f"{name}.p7s"), "-out", "/dev/null"],
            capture_output=True, check=False,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
    manifest = json.loads(archive.read("manifest.json"))
    assert {entry["name"] for entry in manifest["files"]} == expected - {"manifest.json"}

    files_dir = services.batch_files_dir(Batch.objects.get(number=batch_id).pk)
    assert files_dir.exists()
    with django_capture_on_commit_callbacks(execute=True):  # files go once the delete commits
        response = client_a.delete(f"{API}/BatchDeleteCache/{batch_id}")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "id": batch_id,
        "status": "DELETED",
        "creationDate": created["creationDate"],
        "documents": closed["documents"],
    }
    assert not files_dir.exists()
    missing = f"batch {batch_id} not found"
    assert_error(client_a.get(f"{API}/BatchStatus/{batch_id}"), 404, missing)
    assert_error(client_a.get(f"{API}/batchfile/{batch_id}"), 404, missing)
    assert_error(client_a.delete(f"{API}/BatchDeleteCache/{batch_id}"), 404, missing)
    assert_error(upload(client_a, batch_id, package), 404, missing)
    assert_error(client_a.post(f"{API}/AcceptBatch?batchId={batch_id}"), 404, missing)


def test_signing_create__records_the_process_on_a_document_sign_batch(client_a, account):
    created = create(client_a, "31")

    batch = Batch.objects.get(number=int(created["id"]))
    assert (batch.account, batch.type, batch.metadata) == (
        account,
        "document.sign",
        {"processId": 31},
    )


def test_signing_create__non_integer_process_id_is_refused(client_a):
    for process_id in ("abc", "1.5", "0x10"):
        response = client_a.post(f"{API}/CreateBatch/{process_id}")

        assert_error(response, 400, "processId must be an integer")
    assert not Batch.objects.exists()


# --- upload --------------------------------------------------------------------------------------


def test_signing_upload__names_the_package_package_zip_without_a_filename(client_a):
    batch_id = int(create(client_a)["id"])

    response = upload(client_a, batch_id, zip_of({"a.txt": b"a"}))

    assert response.status_code == 202, response.content
    assert response.json()["name"] == "package.zip"


def test_signing_upload__reads_the_body_as_zip_whatever_its_content_type(client_a):
    batch_id = int(create(client_a)["id"])

    response = client_a.generic(
        "POST", f"{API}/upload/{batch_id}", zip_of({"a.txt": b"a"}), "text/plain"
    )

    assert response.status_code == 202, response.content
    assert [d["fileName"] for d in status_of(client_a, batch_id)["documents"]] == ["a.txt"]


def test_signing_upload__adds_to_documents_already_uploaded(client_a):
    batch_id = uploaded_batch(client_a)

    response = upload(client_a, batch_id, zip_of({"more.txt": b"more"}))

    assert response.status_code == 202, response.content
    names = [doc["fileName"] for doc in status_of(client_a, batch_id)["documents"]]
    assert names == [*DOCUMENTS, "more.txt"]


def test_signing_upload__package_with_a_directory_is_refused_whole(client_a):
    batch_id = int(create(client_a)["id"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.txt", b"ok")
        archive.writestr("docs/", b"")
        archive.writestr("docs/inner.txt", b"inner")

    response = upload(client_a, batch_id, buffer.getvalue())

    assert_error(
        response,
        400,
        "the ZIP package is refused: docs/: is a directory; the package must hold files only; "
        "docs/inner.txt: is inside a directory; the package must hold files only",
    )
    assert status_of(client_a, batch_id)["documents"] == []
    assert not Item.objects.exists()


def test_signing_upload__body_that_is_not_a_zip_is_refused(client_a):
    batch_id = int(create(client_a)["id"])

    response = upload(client_a, batch_id, b"%PDF-1.7 not a package")

    assert_error(response, 400, "the body is not a ZIP file: File is not a zip file")
    assert status_of(client_a, batch_id)["status"] == "NEW"


def test_signing_upload__empty_package_is_refused(client_a):
    batch_id = int(create(client_a)["id"])

    response = upload(client_a, batch_id, zip_of({}))

    assert_error(response, 400, "the ZIP package is refused: package: is empty")


def test_signing_upload__after_accept_is_refused(client_a):
    batch_id = uploaded_batch(client_a)
    assert client_a.post(f"{API}/AcceptBatch?batchId={batch_id}").status_code == 202

    response = upload(client_a, batch_id, zip_of({"late.txt": b"late"}))

    assert_error(response, 409, "batch is committed; items can be added only before commit")


def test_signing_upload__unknown_batch_is_not_found(client_a):
    assert_error(upload(client_a, 999999, zip_of({"a": b"a"})), 404, "batch 999999 not found")
    assert_error(upload(client_a, "abc", zip_of({"a": b"a"})), 404, "batch abc not found")


# --- accept --------------------------------------------------------------------------------------


def test_signing_accept__takes_the_batch_id_from_a_json_body(client_a):
    batch_id = uploaded_batch(client_a)

    response = client_a.post(f"{API}/AcceptBatch", {"batchId": batch_id}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "2"
    assert status_of(client_a, batch_id)["status"] == "ACCEPTED"


def test_signing_accept__without_a_batch_id_is_refused(client_a):
    assert_error(client_a.post(f"{API}/AcceptBatch"), 400, "batchId is required")
    assert_error(
        client_a.post(f"{API}/AcceptBatch?batchId=first"), 400, "batchId must be an integer"
    )


def test_signing_accept__empty_batch_is_refused(client_a):
    batch_id = int(create(client_a)["id"])

    response = client_a.post(f"{API}/AcceptBatch?batchId={batch_id}")

    assert_error(response, 409, "batch has no items; add items before committing")
    assert status_of(client_a, batch_id)["status"] == "NEW"


def test_signing_accept__twice_is_refused(client_a, signer, django_capture_on_commit_callbacks):
    batch_id = uploaded_batch(client_a)
    assert accept(client_a, batch_id, django_capture_on_commit_callbacks).status_code == 202

    response = accept(client_a, batch_id, django_capture_on_commit_callbacks)

    assert_error(response, 409, "batch was committed already; it is finished")


def test_signing_accept__unknown_batch_is_not_found(client_a):
    response = client_a.post(f"{API}/AcceptBatch?batchId=999999")

    assert_error(response, 404, "batch 999999 not found")


# --- status and download -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Batch.Status.CREATED, "NEW"),
        (Batch.Status.OPEN, "UPLOADED"),
        (Batch.Status.COMMITTED, "ACCEPTED"),
        (Batch.Status.RUNNING, "IN_PROGRESS"),
        (Batch.Status.FINALIZING, "FINISHING"),
        (Batch.Status.CANCELLING, "FINISHING"),
        (Batch.Status.FINISHED, "CLOSED"),
        (Batch.Status.CANCELLED, "CLOSED"),
        (Batch.Status.FAILED, "CLOSED"),
    ],
)
def test_signing_status__names_each_batch_state(client_a, status, expected):
    batch_id = int(create(client_a)["id"])
    # The engine moves batches through these states on workers; set them directly here.
    Batch.objects.filter(number=batch_id).update(status=status)

    assert status_of(client_a, batch_id)["status"] == expected


def test_signing_status__failed_signing_is_closed_with_unsigned_documents(
    client_a, settings, django_capture_on_commit_callbacks
):
    batch_id = uploaded_batch(client_a)
    with django_capture_on_commit_callbacks() as signing:
        assert client_a.post(f"{API}/AcceptBatch?batchId={batch_id}").status_code == 202
    Path(settings.BATCHSITE_SIGNING_KEY).unlink()  # gone before a worker signs: every one fails
    for work in signing:
        work()

    closed = status_of(client_a, batch_id)
    assert closed["status"] == "CLOSED"
    assert [(d["signed"], d["signingResult_Success"]) for d in closed["documents"]] == [
        ("false", "false")
    ] * len(DOCUMENTS)


def test_signing_batchfile__not_found_until_the_batch_is_closed(client_a):
    batch_id = uploaded_batch(client_a)
    not_ready = f"batch {batch_id} is not closed yet; its package is not ready"

    assert_error(client_a.get(f"{API}/batchfile/{batch_id}"), 404, not_ready)
    # Accepted, but no worker has run it (its on-commit work is not executed).
    assert client_a.post(f"{API}/AcceptBatch?batchId={batch_id}").status_code == 202
    assert status_of(client_a, batch_id)["status"] == "ACCEPTED"
    assert_error(client_a.get(f"{API}/batchfile/{batch_id}"), 404, not_ready)


# --- authentication, tenancy, unknown paths ------------------------------------------------------


def test_signing__requests_without_a_usable_key_are_refused(client_a):
    batch_id = int(create(client_a)["id"])

    anonymous = APIClient().get(f"{API}/BatchStatus/{batch_id}")
    assert_error(anonymous, 401, "Authentication credentials were not provided.")
    assert anonymous["WWW-Authenticate"] == "Api-Key"
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Api-Key abc.def")
    assert_error(forged.post(f"{API}/CreateBatch/1"), 401, "Invalid API key.")
    assert Batch.objects.count() == 1


def test_signing__another_accounts_batch_is_not_found(client_a, client_b, signer):
    batch_id = uploaded_batch(client_a)
    missing = f"batch {batch_id} not found"

    assert_error(client_b.get(f"{API}/BatchStatus/{batch_id}"), 404, missing)
    assert_error(upload(client_b, batch_id, zip_of({"x.txt": b"x"})), 404, missing)
    assert_error(client_b.post(f"{API}/AcceptBatch?batchId={batch_id}"), 404, missing)
    assert_error(client_b.get(f"{API}/batchfile/{batch_id}"), 404, missing)
    assert_error(client_b.delete(f"{API}/BatchDeleteCache/{batch_id}"), 404, missing)
    mine = status_of(client_a, batch_id)
    assert (mine["status"], len(mine["documents"])) == ("UPLOADED", len(DOCUMENTS))


def test_signing__unknown_path_and_wrong_method_answer_in_the_dialect(client_a):
    assert_error(client_a.get(f"{API}/NoSuchMethod/1"), 404, f"no resource at {API}/NoSuchMethod/1")
    assert_error(client_a.get(f"{API}/CreateBatch/1"), 405, 'Method "GET" not allowed.')


# --- schema --------------------------------------------------------------------------------------


def test_signing__schema_describes_dates_as_the_dialect_writes_them(db):
    schemas = APIClient().get("/api/v1/schema/?format=json").json()["components"]["schemas"]

    for name in ("SigningBatchRecord", "SigningBatchStatus", "SigningPackageRecord"):
        creation_date = schemas[name]["properties"]["creationDate"]
        assert "format" not in creation_date, name
        assert re.compile(creation_date["pattern"]).match("2024-06-11 14:30:00"), name


def test_signing__schema_lists_every_endpoint_under_its_tag(db):
    response = APIClient().get("/api/v1/schema/?format=json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        ("/compat/signing/api/CreateBatch/{processId}", "post"),
        ("/compat/signing/api/upload/{batchId}", "post"),
        ("/compat/signing/api/BatchStatus/{batchId}", "get"),
        ("/compat/signing/api/AcceptBatch", "post"),
        ("/compat/signing/api/batchfile/{batchId}", "get"),
        ("/compat/signing/api/BatchDeleteCache/{batchId}", "delete"),
    }
    for path, method in expected:
        assert paths[path][method]["tags"] == ["compat: signing"], path
    tagged = {
        (path, method)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "compat: signing" in operation.get("tags", [])
    }
    assert tagged == expected


def test_signing_delete__removes_an_unaccepted_batch_and_its_files(
    client_a, django_capture_on_commit_callbacks
):
    batch_id = uploaded_batch(client_a)
    before = status_of(client_a, batch_id)
    files_dir = services.batch_files_dir(Batch.objects.get(number=batch_id).pk)
    assert files_dir.exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = client_a.delete(f"{API}/BatchDeleteCache/{batch_id}")

    assert response.status_code == 200
    assert response.json() == {**before, "status": "DELETED"}
    assert not files_dir.exists()
    assert_error(client_a.get(f"{API}/BatchStatus/{batch_id}"), 404, f"batch {batch_id} not found")
