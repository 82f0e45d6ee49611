"""Job types that cannot run here are refused up front: at submission, and again at commit.

document.sign is not ready without a signing key, email.send without a mail server. Each
refusal is a 409 `job_type_not_ready` problem document that says what to run or set, and
nothing of the refused request is stored.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from batches.models import Batch, BatchError, Item
from tests.helpers.api import (
    BATCHES,
    batch_url,
    create_batch,
    problem_content,
    row_counts,
    run_commit,
    serve,
    upload,
)
from tests.helpers.files import jsonl_text, zip_data

PROBLEM = "application/problem+json"
NO_SIGNER = {
    "type": "urn:batchsite:problem:job_type_not_ready",
    "title": "Job type not ready",
    "status": 409,
    "detail": "job type 'document.sign' is not ready: there is no signing key; run "
    "`manage.py createsigningkey` to make one (or to import yours)",
    "code": "job_type_not_ready",
    "job_types": ["document.sign"],
}
NO_MAIL_SERVER = {
    **NO_SIGNER,
    "detail": "job type 'email.send' is not ready: no mail server is configured; set "
    "EMAIL_HOST (with EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD and EMAIL_USE_TLS as "
    "it needs), or EMAIL_BACKEND to another Django mail backend",
    "job_types": ["email.send"],
}
MAIL = {"type": "email.send", "payload": {"to": "ann@example.com", "subject": "Hi", "text": "."}}
DOCUMENTS = {"a.txt": b"alpha", "b.txt": b"beta"}


pytestmark = pytest.mark.usefixtures("no_signer")


def make_signer() -> None:
    call_command("createsigningkey", "--force", stdout=io.StringIO())


def assert_not_ready(response, expected: dict) -> None:
    assert response.status_code == 409, response.content
    assert response["Content-Type"] == PROBLEM
    assert problem_content(response) == expected


def stored_files() -> list[Path]:
    return [path for path in Path(django_settings.MEDIA_ROOT).rglob("*") if path.is_file()]


# --- at submission --------------------------------------------------------------------------------


def test_items_add__item_of_an_unready_type_refuses_the_request(client_a, no_mail_server):
    batch = create_batch(client_a)
    before = row_counts()

    response = client_a.post(batch_url(batch, "items/"), [{"payload": {}}, MAIL], format="json")

    assert_not_ready(response, NO_MAIL_SERVER)
    assert row_counts() == before
    assert Batch.objects.get(pk=batch["id"]).status == Batch.Status.CREATED


def test_batch_create__with_items_of_an_unready_type_stores_nothing(client_a, no_mail_server):
    response = client_a.post(BATCHES, {"items": [MAIL], "commit": True}, format="json")

    assert_not_ready(response, NO_MAIL_SERVER)
    assert row_counts() == dict.fromkeys(row_counts(), 0)


def test_item_add_file__document_without_a_signer_is_refused(client_a):
    batch = create_batch(client_a, type="document.sign")
    before = row_counts()

    response = client_a.post(
        batch_url(batch, "items/"),
        {"file": SimpleUploadedFile("contract.pdf", b"%PDF-1.7")},
        format="multipart",
    )

    assert_not_ready(response, NO_SIGNER)
    assert row_counts() == before
    assert stored_files() == []


@pytest.mark.parametrize("dry_run", ["", "?dry_run=1"])
def test_upload__zip_of_documents_without_a_signer_is_refused(client_a, dry_run):
    batch = create_batch(client_a, type="document.sign")
    before = row_counts()

    response = client_a.post(
        batch_url(batch, f"upload/{dry_run}"),
        data=zip_data(DOCUMENTS),
        content_type="application/zip",
    )

    assert_not_ready(response, NO_SIGNER)
    assert row_counts() == before
    assert stored_files() == []


def test_upload__jsonl_line_of_an_unready_type_refuses_the_file(client_a, no_mail_server):
    batch = create_batch(client_a)
    before = row_counts()
    lines = jsonl_text([{"payload": {"n": 1}}, MAIL])

    response = client_a.post(
        batch_url(batch, "upload/"), data=lines, content_type="application/x-ndjson"
    )

    assert_not_ready(response, NO_MAIL_SERVER)
    assert row_counts() == before


def test_batch_create__source_url_of_an_unready_type_is_refused(client_a, settings):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["files.example.com"]
    body = {"type": "document.sign", "source_url": "https://files.example.com/docs.zip"}

    response = client_a.post(BATCHES, body, format="json")

    assert_not_ready(response, NO_SIGNER)
    assert not Batch.objects.exists()


def test_source_ingest__lines_of_an_unready_type_fail_the_batch(
    client_a, settings, httpserver, no_mail_server, django_capture_on_commit_callbacks
):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]
    url = serve(httpserver, "/mail.jsonl", jsonl_text([MAIL, MAIL]))

    with django_capture_on_commit_callbacks(execute=True):
        created = create_batch(client_a, source_url=url, commit=True)

    batch = Batch.objects.get(pk=created["id"])
    assert batch.status == Batch.Status.FAILED
    assert not Item.objects.filter(batch=batch).exists()
    error = BatchError.objects.get(batch=batch)
    assert (error.code, error.message) == ("job_type_not_ready", NO_MAIL_SERVER["detail"])


def test_items_add__accepted_once_the_signer_exists(client_a):
    batch = create_batch(client_a, type="document.sign")
    url = batch_url(batch, "upload/")
    zipped = zip_data(DOCUMENTS)
    assert client_a.post(url, data=zipped, content_type="application/zip").status_code == 409

    make_signer()

    assert upload(client_a, batch, zipped)["added"] == len(DOCUMENTS)


# --- at commit and rerun --------------------------------------------------------------------------


def test_batch_commit__refused_when_the_signer_went_after_the_items_came(
    client_a, django_capture_on_commit_callbacks
):
    make_signer()
    batch = create_batch(client_a, type="document.sign")
    upload(client_a, batch, zip_data(DOCUMENTS))
    Path(django_settings.BATCHSITE_SIGNING_KEY).unlink()
    before = row_counts()

    assert_not_ready(client_a.post(batch_url(batch, "commit/")), NO_SIGNER)

    assert row_counts() == before
    stored = Batch.objects.get(pk=batch["id"])
    assert (stored.status, stored.committed_at, stored.pending_items) == ("open", None, 2)
    make_signer()
    finished = run_commit(client_a, batch, django_capture_on_commit_callbacks)
    assert (finished.status, finished.succeeded_items) == (Batch.Status.FINISHED, 2)


def test_batch_rerun__refused_while_a_type_is_not_ready(
    client_a, django_capture_on_commit_callbacks
):
    make_signer()
    batch = create_batch(client_a, type="document.sign")
    upload(client_a, batch, zip_data(DOCUMENTS))
    run_commit(client_a, batch, django_capture_on_commit_callbacks)
    Path(django_settings.BATCHSITE_SIGNING_KEY).unlink()

    response = client_a.post(batch_url(batch, "rerun/"), {"items": "all"}, format="json")

    assert_not_ready(response, NO_SIGNER)
    stored = Batch.objects.get(pk=batch["id"])
    assert (stored.status, stored.succeeded_items) == (Batch.Status.FINISHED, 2)
