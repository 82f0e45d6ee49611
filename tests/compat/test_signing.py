"""The document-signing dialect under /compat/signing/, exercised as that API's client would.

A client creates a batch for a process, uploads a ZIP package as an octet stream, accepts
the batch, polls its status, downloads the signed package and deletes the batch. Errors
answer `{"error": "..."}`. django-q2 runs in sync mode, so signing runs inline when the
accept's transaction commits (django_capture_on_commit_callbacks(execute=True)).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import zipfile
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from rest_framework.test import APIClient

from batches.models import Batch, Item
from batchsite.env import env_int_map
from tests.helpers.files import batch_files_dir

API = "/compat/signing/api"
OCTETS = "application/octet-stream"
FORM = "application/x-www-form-urlencoded"
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


def create(client, process_id="1") -> dict:
    response = client.post(f"{API}/CreateBatch/{process_id}")
    assert response.status_code == 201, response.content
    return response.json()


def upload(client, batch_id, body: bytes, **headers):
    return client.generic("POST", f"{API}/upload/{batch_id}", body, OCTETS, **headers)


def upload_record(record: dict, *, package: bytes, batch_id: int, name: str, **echoed) -> dict:
    """Return the upload record the dialect should answer, given what the test sent."""
    return {
        "id": record["id"],
        "counterpartyId": echoed.get("counterpartyId"),
        "name": name,
        "signed": "false",
        "hash": hashlib.sha256(package).hexdigest(),
        "signature": None,
        "batchId": batch_id,
        "creationDate": record["creationDate"],
        "isZip": "true",
        "tsaId": echoed.get("tsaId"),
    }


def status_of(client, batch_id) -> dict:
    response = client.get(f"{API}/BatchStatus/{batch_id}")
    assert response.status_code == 200, response.content
    return response.json()


def accept(client, batch_id, capture):
    with capture(execute=True):
        return client.post(f"{API}/AcceptBatch?batchId={batch_id}")


def uploaded_batch_of(client, created: dict, documents: dict[str, bytes] = DOCUMENTS) -> int:
    """Upload `documents` to the batch CreateBatch answered with `created`; return its id."""
    batch_id = int(created["id"])
    assert upload(client, batch_id, zip_of(documents)).status_code == 202
    return batch_id


def uploaded_batch(client) -> int:
    """Create a batch with DOCUMENTS uploaded; return its id."""
    return uploaded_batch_of(client, create(client))


def assert_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": message}


# --- the whole life of a batch -------------------------------------------------------------------


def test_signing__create_upload_accept_poll_download_delete(
    client_a, signer, tmp_path, django_capture_on_commit_callbacks
):
    created = create(client_a, "1")
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
    assert record == upload_record(record, package=package, batch_id=batch_id, name="deal.zip")
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

    files_dir = batch_files_dir(Batch.objects.get(number=batch_id).pk)
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


def test_signing__validation_process_checks_a_signed_package(
    client_a, signer, django_capture_on_commit_callbacks
):
    signed_id = uploaded_batch(client_a)
    assert accept(client_a, signed_id, django_capture_on_commit_callbacks).status_code == 202
    package = b"".join(client_a.get(f"{API}/batchfile/{signed_id}").streaming_content)
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["letter.txt"] = b"Dear client,\r\nplease pay twice.\n"  # its signature no longer fits
    created = create(client_a, "2")

    batch_id = uploaded_batch_of(client_a, created, files)

    uploaded = status_of(client_a, batch_id)
    names = ["contract.pdf", "letter.txt", "manifest.json"]  # each .p7s went with its document
    assert [doc["fileName"] for doc in uploaded["documents"]] == names

    response = accept(client_a, batch_id, django_capture_on_commit_callbacks)

    assert response.status_code == 202, response.content
    assert response.json() == {
        "id": batch_id,
        "providerSettingsId": "1",
        "creationDate": created["creationDate"],
        "status": "2",
    }
    ids = [doc["id"] for doc in uploaded["documents"]]
    assert status_of(client_a, batch_id) == {
        "id": batch_id,
        "status": "CLOSED",
        "creationDate": created["creationDate"],
        "documents": [
            {"id": ids[0], "signed": "true", "fileName": "contract.pdf",
             "signingResult_Success": "true"},
            {"id": ids[1], "signed": "false", "fileName": "letter.txt",
             "signingResult_Success": "false"},
            {"id": ids[2], "signed": "false", "fileName": "manifest.json",
             "signingResult_Success": "false"},
        ],
    }  # fmt: skip
    items = Item.objects.filter(batch__number=batch_id).order_by("index")
    contract, letter, manifest = items
    assert (contract.status, contract.result["valid"]) == ("succeeded", True)
    assert (letter.status, letter.result["valid"]) == ("succeeded", False)
    assert (manifest.status, manifest.error_code) == ("failed", "no_signature")
    validated = b"".join(client_a.get(f"{API}/batchfile/{batch_id}").streaming_content)
    assert zipfile.ZipFile(io.BytesIO(validated)).namelist() == ["manifest.json"]


def test_signing_upload__validation_package_pairs_each_signature_with_its_document(client_a):
    batch_id = int(create(client_a, "2")["id"])
    package = {"b.txt.p7s": b"signature of b", "b.txt": b"b", "lonely.txt.p7s": b"no document"}

    upload_response = upload(client_a, batch_id, zip_of(package))

    assert upload_response.status_code == 202, upload_response.content
    names = [doc["fileName"] for doc in status_of(client_a, batch_id)["documents"]]
    assert names == ["b.txt", "lonely.txt.p7s"]
    items = Item.objects.filter(batch__number=batch_id).order_by("index")
    assert [item.payload for item in items] == [
        {"signature": base64.b64encode(b"signature of b").decode()},
        {},
    ]
    stored = batch_files_dir(items[0].batch_id) / "in"
    kept = sorted(path.read_bytes() for path in stored.rglob("*") if path.is_file())
    assert kept == [b"b", b"no document"], "a paired signature's file was left behind"


def test_signing_upload__validation_package_with_a_signature_too_big_is_refused(client_a, settings):
    settings.BATCHSITE_MAX_PAYLOAD_BYTES = 400
    batch_id = int(create(client_a, "2")["id"])

    response = upload(client_a, batch_id, zip_of({"b.txt": b"b", "b.txt.p7s": b"s" * 301}))

    assert_error(
        response,
        400,
        "1 lines of the file are invalid; nothing was added: "
        "b.txt: b.txt.p7s: is 301 bytes; a signature may be at most 300",
    )
    assert status_of(client_a, batch_id)["documents"] == []


def test_signing_create__records_the_process_on_a_document_sign_batch(client_a, account):
    created = create(client_a, "1")

    batch = Batch.objects.get(number=int(created["id"]))
    assert (batch.account, batch.type, batch.metadata) == (
        account,
        "document.sign",
        {"processId": 1},
    )


def test_signing_create__non_integer_process_id_is_refused(client_a):
    for process_id in ("abc", "1.5", "0x10"):
        response = client_a.post(f"{API}/CreateBatch/{process_id}")

        assert_error(response, 400, "processId must be an integer")
    assert not Batch.objects.exists()


def test_signing_create__unknown_process_id_is_the_documented_400(client_a):
    response = client_a.post(f"{API}/CreateBatch/7")

    assert_error(
        response,
        400,
        "The processId value 7 is not valid; the processes are 1 (document.sign), "
        "2 (document.verify)",
    )
    assert not Batch.objects.exists()


def test_signing_create__process_2_validates(client_a, account):
    created = create(client_a, "2")

    batch = Batch.objects.get(number=int(created["id"]))
    assert (batch.type, batch.metadata) == ("document.verify", {"processId": 2})


def test_signing_create__processes_come_from_the_setting(client_a, settings):
    settings.BATCHSITE_SIGNING_PROCESSES = {5: "document.verify", 9: "document.sign"}

    created = create(client_a, "5")

    assert Batch.objects.get(number=int(created["id"])).type == "document.verify"
    assert_error(
        client_a.post(f"{API}/CreateBatch/1"),
        400,
        "The processId value 1 is not valid; the processes are 5 (document.verify), "
        "9 (document.sign)",
    )


def test_signing_processes__setting_reads_integer_name_pairs(monkeypatch):
    monkeypatch.setenv("BATCHSITE_SIGNING_PROCESSES", " 3=document.verify, 4 = acme.seal ")

    assert env_int_map("BATCHSITE_SIGNING_PROCESSES", "1=x") == {
        3: "document.verify",
        4: "acme.seal",
    }
    monkeypatch.setenv("BATCHSITE_SIGNING_PROCESSES", "sign=document.sign")
    with pytest.raises(
        ImproperlyConfigured, match=r"INTEGER=NAME pairs, not 'sign=document\.sign'"
    ):
        env_int_map("BATCHSITE_SIGNING_PROCESSES", "1=x")
    monkeypatch.delenv("BATCHSITE_SIGNING_PROCESSES")
    assert env_int_map("BATCHSITE_SIGNING_PROCESSES", "1=document.sign,2=document.verify") == {
        1: "document.sign",
        2: "document.verify",
    }


def post_fields(client, url: str, fields: dict, how: str):
    """POST `fields` to `url` as JSON, a urlencoded or multipart form, or a query string."""
    if how == "query":
        return client.post(f"{url}?{urlencode(fields)}")
    if how == FORM:
        return client.post(url, urlencode(fields), content_type=FORM)
    return client.post(url, fields, format=how)


@pytest.mark.parametrize(
    ("how", "value"),
    [("json", "3"), ("json", 3), (FORM, "3"), ("multipart", "3"), ("query", "3")],
)
def test_signing_create__echoes_the_provider_settings_id_sent(client_a, how, value):
    response = post_fields(client_a, f"{API}/CreateBatch/1", {"providerSettingsId": value}, how)

    assert response.status_code == 201, response.content
    created = response.json()
    assert created == {
        "id": created["id"],
        "providerSettingsId": "3",
        "creationDate": created["creationDate"],
        "status": "0",
    }
    batch_id = int(created["id"])
    assert upload(client_a, batch_id, zip_of({"a.txt": b"a"})).status_code == 202
    accepted = client_a.post(f"{API}/AcceptBatch/{batch_id}")
    assert accepted.json() == {
        "id": batch_id,
        "providerSettingsId": "3",
        "creationDate": created["creationDate"],
        "status": "2",
    }


def test_signing_create__provider_settings_id_sent_twice_differently_is_refused(client_a):
    response = client_a.post(
        f"{API}/CreateBatch/1?providerSettingsId=3", {"providerSettingsId": "4"}, format="json"
    )

    assert_error(response, 400, "providerSettingsId is sent more than once, with different values")
    assert not Batch.objects.exists()


def test_signing_create__provider_settings_id_that_is_not_a_value_is_refused(client_a):
    response = client_a.post(
        f"{API}/CreateBatch/1", {"providerSettingsId": {"id": 3}}, format="json"
    )

    assert_error(response, 400, "Not a valid string.")
    assert not Batch.objects.exists()


# --- upload --------------------------------------------------------------------------------------


def test_signing_upload__echoes_the_counterparty_and_tsa_ids_sent(client_a):
    batch_id = int(create(client_a)["id"])
    package = zip_of({"a.txt": b"a"})

    # Sent as `curl --data-binary` sends it: labelled a form, but the body is the package.
    response = client_a.generic(
        "POST", f"{API}/upload/{batch_id}?counterpartyId=12&tsaId=4", package, FORM
    )

    assert response.status_code == 202, response.content
    record = response.json()
    assert record == upload_record(
        record,
        package=package,
        batch_id=batch_id,
        name="package.zip",
        counterpartyId="12",
        tsaId="4",
    )


def test_signing_upload__takes_the_package_from_a_multipart_body(client_a):
    batch_id = int(create(client_a)["id"])
    package = zip_of(DOCUMENTS)
    file = io.BytesIO(package)
    file.name = "deal.zip"

    response = client_a.post(
        f"{API}/upload/{batch_id}", {"file": file, "counterpartyId": "12"}, format="multipart"
    )

    assert response.status_code == 202, response.content
    record = response.json()
    assert record == upload_record(
        record, package=package, batch_id=batch_id, name="deal.zip", counterpartyId="12"
    )
    assert [d["fileName"] for d in status_of(client_a, batch_id)["documents"]] == list(DOCUMENTS)


@pytest.mark.parametrize("count", [0, 2])
def test_signing_upload__multipart_body_without_exactly_one_file_is_refused(client_a, count):
    batch_id = int(create(client_a)["id"])
    body = {"counterpartyId": "12"}
    for n in range(count):
        body[f"file{n}"] = io.BytesIO(zip_of({"a.txt": b"a"}))

    response = client_a.post(f"{API}/upload/{batch_id}", body, format="multipart")

    assert_error(
        response,
        400,
        f"a multipart upload carries exactly one file, the ZIP package; this one has {count}",
    )
    assert status_of(client_a, batch_id)["documents"] == []


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


def test_signing_accept__takes_the_batch_id_from_the_path(client_a):
    created = create(client_a)
    batch_id = uploaded_batch_of(client_a, created)

    response = client_a.post(f"{API}/AcceptBatch/{batch_id}")

    assert response.status_code == 202, response.content
    assert response.json() == {
        "id": batch_id,
        "providerSettingsId": "1",
        "creationDate": created["creationDate"],
        "status": "2",
    }
    assert status_of(client_a, batch_id)["status"] == "ACCEPTED"


@pytest.mark.parametrize("encoding", [FORM, "multipart"])
def test_signing_accept__takes_the_batch_id_from_a_form_body(client_a, encoding):
    created = create(client_a)
    batch_id = uploaded_batch_of(client_a, created)

    response = post_fields(client_a, f"{API}/AcceptBatch", {"batchId": batch_id}, encoding)

    assert response.status_code == 202, response.content
    assert response.json() == {
        "id": batch_id,
        "providerSettingsId": "1",
        "creationDate": created["creationDate"],
        "status": "2",
    }


def test_signing_accept__batch_ids_that_disagree_are_refused(client_a):
    batch_id = uploaded_batch(client_a)
    different = "batchId is sent more than once, with different values"

    other = batch_id + 1
    assert_error(client_a.post(f"{API}/AcceptBatch/{batch_id}?batchId={other}"), 400, different)
    assert_error(
        client_a.post(f"{API}/AcceptBatch/{batch_id}", {"batchId": other}, format="json"),
        400,
        different,
    )
    assert_error(
        client_a.post(f"{API}/AcceptBatch?batchId={batch_id}", {"batchId": other}, format="json"),
        400,
        different,
    )
    assert status_of(client_a, batch_id)["status"] == "UPLOADED"
    same = client_a.post(f"{API}/AcceptBatch/{batch_id}?batchId={batch_id}")
    assert same.status_code == 202, same.content


def test_signing_accept__path_batch_id_that_names_no_batch_is_not_found(client_a):
    assert_error(client_a.post(f"{API}/AcceptBatch/abc"), 404, "batch abc not found")
    assert_error(client_a.post(f"{API}/AcceptBatch/999999"), 404, "batch 999999 not found")


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
    schemas = APIClient().get("/compat/signing/schema/?format=json").json()["components"]["schemas"]

    for name in ("SigningBatchRecord", "SigningBatchStatus", "SigningPackageRecord"):
        creation_date = schemas[name]["properties"]["creationDate"]
        assert "format" not in creation_date, name
        assert re.compile(creation_date["pattern"]).match("2024-06-11 14:30:00"), name


def test_signing__schema_lists_every_endpoint_under_its_tag(db):
    response = APIClient().get("/compat/signing/schema/?format=json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        ("/compat/signing/api/CreateBatch/{processId}", "post"),
        ("/compat/signing/api/upload/{batchId}", "post"),
        ("/compat/signing/api/BatchStatus/{batchId}", "get"),
        ("/compat/signing/api/AcceptBatch", "post"),
        ("/compat/signing/api/AcceptBatch/{batchId}", "post"),
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
    files_dir = batch_files_dir(Batch.objects.get(number=batch_id).pk)
    assert files_dir.exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = client_a.delete(f"{API}/BatchDeleteCache/{batch_id}")

    assert response.status_code == 200
    assert response.json() == {**before, "status": "DELETED"}
    assert not files_dir.exists()
    assert_error(client_a.get(f"{API}/BatchStatus/{batch_id}"), 404, f"batch {batch_id} not found")
