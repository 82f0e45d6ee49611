"""Files in an S3 bucket (a real moto server on loopback): file items, job outputs,
packages, deletes and purges, and a worker host that shares no disk with the web."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone
from PIL import Image

from batches import files, services
from batches.models import Batch, Item
from tests.conftest import wait_for
from tests.helpers.api import batch_url, create_batch, run_commit, upload
from tests.helpers.files import zip_data
from tests.storage.conftest import storages_from

pytestmark = pytest.mark.s3

DOCUMENTS = {
    "contract.pdf": b"%PDF-1.7\n" + bytes(range(256)) * 400 + b"\n%%EOF\n",
    "notes.txt": b"line one\r\nline two\nno newline at the end",
    "data.bin": b"\x00\xff\r\n\x1a" * 5000,
}


@pytest.fixture
def signer(settings, tmp_path):
    """Make document.sign's key and certificate (local files, as on every worker host)."""
    settings.BATCHSITE_SIGNING_KEY = tmp_path / "signer" / "key.pem"
    settings.BATCHSITE_SIGNING_CERT = tmp_path / "signer" / "cert.pem"
    call_command("createsigningkey", "--common-name", "S3 Signer", stdout=io.StringIO())


def local_files(root) -> list[Path]:
    """Return every file under `root` (a data dir's files folder)."""
    root = Path(root)
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def package_of(client, batch) -> tuple[zipfile.ZipFile, dict]:
    """Download the batch's package; check every file against the manifest's SHA-256."""
    response = client.get(batch_url(batch, "package/"))
    assert response.status_code == 200, response.content
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    manifest = json.loads(archive.read("manifest.json"))
    for entry in manifest["files"]:
        data = archive.read(entry["name"])
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["name"]
        assert len(data) == entry["bytes"]
    assert sorted(archive.namelist()) == sorted(
        ["manifest.json", *(entry["name"] for entry in manifest["files"])]
    )
    return archive, manifest


def signed_batch(client, django_capture_on_commit_callbacks) -> Batch:
    """Upload DOCUMENTS as a ZIP to a document.sign batch and run it to its end."""
    batch = create_batch(client, type="document.sign")
    assert upload(client, batch, zip_data(DOCUMENTS))["added"] == len(DOCUMENTS)
    done = run_commit(client, batch, django_capture_on_commit_callbacks)
    assert done.status == Batch.Status.FINISHED
    assert done.succeeded_items == len(DOCUMENTS)
    return done


def test_settings__s3_variables_make_the_storage_the_tests_use(s3, settings):
    made = storages_from(s3.environ())

    assert made["default"] == settings.STORAGES["default"]
    assert storages_from({})["default"] == {
        "BACKEND": "django.core.files.storage.FileSystemStorage"
    }


def test_s3__zip_items_and_signed_outputs_go_to_the_bucket_not_the_data_dir(
    s3, signer, client_a, settings, django_capture_on_commit_callbacks
):
    batch = signed_batch(client_a, django_capture_on_commit_callbacks)

    prefix = f"{s3.prefix}/batches/{batch.pk}"
    inputs = s3.keys(f"{prefix}/in/")
    outputs = s3.keys(f"{prefix}/out/")
    assert len(inputs) == len(DOCUMENTS)
    assert len(outputs) == 2 * len(DOCUMENTS)  # each document and its .p7s
    assert s3.keys() == sorted(inputs + outputs)
    items = Item.objects.filter(batch=batch)
    assert sorted(f"{s3.prefix}/{item.input_file}" for item in items) == inputs
    recorded = [f"{s3.prefix}/{o['path']}" for item in items for o in item.output_files]
    assert sorted(recorded) == outputs
    stored = {s3.read(f"{s3.prefix}/{item.input_file}") for item in items}
    assert stored == set(DOCUMENTS.values())
    assert local_files(settings.MEDIA_ROOT) == []
    # Nothing left on the way either: uploads, extracted members, attempts' output folders.
    assert local_files(Path(settings.BATCHSITE_DATA_DIR) / "tmp") == []


def test_s3__package_streams_outputs_from_the_bucket_with_a_matching_manifest(
    s3, signer, client_a, django_capture_on_commit_callbacks
):
    batch = signed_batch(client_a, django_capture_on_commit_callbacks)

    archive, manifest = package_of(client_a, batch)

    assert len(s3.keys(f"{s3.prefix}/batches/{batch.pk}/out/")) == len(manifest["files"])
    names = {entry["name"] for entry in manifest["files"]}
    assert names == {*DOCUMENTS, *(f"{name}.p7s" for name in DOCUMENTS)}
    for name, data in DOCUMENTS.items():
        assert archive.read(name) == data
        assert archive.read(f"{name}.p7s")[:1] == b"\x30"  # a DER SEQUENCE: the CMS signature


def test_s3__image_derive_file_item_reads_its_input_and_stores_its_derivatives(
    s3, client_a, settings, django_capture_on_commit_callbacks
):
    picture = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 100, 50)).save(picture, format="PNG")
    batch = create_batch(client_a, type="image.derive")
    added = client_a.post(
        batch_url(batch, "items/"),
        {
            "file": SimpleUploadedFile("photo.png", picture.getvalue()),
            "payload": json.dumps({"sizes": [[64, 64]], "format": "png"}),
        },
        format="multipart",
    )
    assert added.status_code == 201, added.content

    done = run_commit(client_a, batch, django_capture_on_commit_callbacks)

    item = Item.objects.get(batch=done)
    assert item.status == Item.Status.SUCCEEDED, item.error_message
    [output] = item.output_files
    derived = Image.open(io.BytesIO(s3.read(f"{s3.prefix}/{output['path']}")))
    assert max(derived.size) == 64
    archive, _ = package_of(client_a, batch)
    assert archive.read(output["name"]) == s3.read(f"{s3.prefix}/{output['path']}")
    assert local_files(settings.MEDIA_ROOT) == []


def test_s3__a_failed_attempt_leaves_no_output_in_the_bucket(
    s3, client_a, django_capture_on_commit_callbacks
):
    batch = create_batch(client_a, type="test.stamp_then_fail")
    upload(client_a, batch, zip_data({"retried.txt": b"retried"}))
    failing = create_batch(client_a, type="test.stamp_then_fail")
    upload(client_a, failing, zip_data({"failed.txt": b"failed"}))
    items = Item.objects.filter(batch_id=batch["id"])
    items.update(payload={"fail_attempts": 1})  # the first attempt writes, then fails
    Item.objects.filter(batch_id=failing["id"]).update(
        payload={"fail_attempts": 9, "permanent": True}
    )

    retried = run_commit(client_a, batch, django_capture_on_commit_callbacks)
    failed = run_commit(client_a, failing, django_capture_on_commit_callbacks)

    item = items.get()
    assert item.status == Item.Status.SUCCEEDED
    assert item.result["attempt"] == 2
    assert s3.keys(f"{s3.prefix}/batches/{retried.pk}/out/") == [
        f"{s3.prefix}/{item.output_files[0]['path']}"
    ]
    assert Item.objects.get(batch=failed).status == Item.Status.FAILED
    assert s3.keys(f"{s3.prefix}/batches/{failed.pk}/out/") == []


def test_s3__batch_delete_removes_every_key_of_the_batch_and_only_its_keys(
    s3, signer, client_a, django_capture_on_commit_callbacks
):
    gone = signed_batch(client_a, django_capture_on_commit_callbacks)
    kept = signed_batch(client_a, django_capture_on_commit_callbacks)
    # A file no row names (say, outputs of a worker whose lease was lost) goes too.
    orphan = f"{files.outputs_prefix(gone.pk)}/orphan"
    files.storage().save(orphan, io.BytesIO(b"late write"))
    kept_keys = s3.keys(f"{s3.prefix}/batches/{kept.pk}/")

    with django_capture_on_commit_callbacks(execute=True):
        assert client_a.delete(batch_url(gone)).status_code == 204

    assert s3.keys(f"{s3.prefix}/batches/{gone.pk}/") == []
    assert s3.keys(f"{s3.prefix}/batches/{kept.pk}/") == kept_keys
    assert len(kept_keys) == 3 * len(DOCUMENTS)


def test_s3__purge_deletes_the_files_of_the_batches_it_deletes(
    s3, signer, client_a, django_capture_on_commit_callbacks
):
    old = signed_batch(client_a, django_capture_on_commit_callbacks)
    recent = signed_batch(client_a, django_capture_on_commit_callbacks)
    Batch.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=40))
    assert len(s3.keys(f"{s3.prefix}/batches/{old.pk}/")) == 3 * len(DOCUMENTS)
    recent_keys = s3.keys(f"{s3.prefix}/batches/{recent.pk}/")

    with django_capture_on_commit_callbacks(execute=True):
        purged = services.batches_purge_older(
            older_than=timedelta(days=30), dry_run=False, actor="test"
        )

    assert [batch.pk for batch in purged] == [old.pk]
    assert s3.keys() == recent_keys
    assert len(recent_keys) == 3 * len(DOCUMENTS)


def test_s3__rerun_all_replaces_the_outputs(
    s3, signer, client_a, django_capture_on_commit_callbacks
):
    batch = signed_batch(client_a, django_capture_on_commit_callbacks)
    first = s3.keys(f"{s3.prefix}/batches/{batch.pk}/out/")
    assert len(first) == 2 * len(DOCUMENTS)

    with django_capture_on_commit_callbacks(execute=True):
        rerun = client_a.post(batch_url(batch, "rerun/"), {"items": "all"}, format="json")
    assert rerun.status_code == 200, rerun.content

    second = s3.keys(f"{s3.prefix}/batches/{batch.pk}/out/")
    assert len(second) == len(first)
    assert not set(first) & set(second)
    package_of(client_a, batch)


def test_s3__a_worker_with_its_own_empty_data_dir_runs_what_the_web_stored(
    s3, signer, client_a, settings, tmp_path, django_capture_on_commit_callbacks
):
    batch = create_batch(client_a, type="document.sign")
    upload(client_a, batch, zip_data(DOCUMENTS))
    web_files = Path(settings.MEDIA_ROOT)
    # The worker is another host: a data dir of its own, and the web's is gone.
    shutil.rmtree(settings.BATCHSITE_DATA_DIR, ignore_errors=True)
    settings.BATCHSITE_DATA_DIR = tmp_path / "worker"
    settings.MEDIA_ROOT = tmp_path / "worker" / "files"

    done = run_commit(client_a, batch, django_capture_on_commit_callbacks)

    assert done.status == Batch.Status.FINISHED
    assert done.succeeded_items == len(DOCUMENTS)
    assert local_files(settings.MEDIA_ROOT) == []
    assert local_files(web_files) == []
    _, manifest = package_of(client_a, batch)
    assert len(manifest["files"]) == 2 * len(DOCUMENTS)


@pytest.mark.cluster
def test_s3__a_qcluster_on_another_data_dir_signs_a_zip_the_web_stored(
    s3, signer, client_a, settings, tmp_path, cluster_factory
):
    batch = create_batch(client_a, type="document.sign")
    upload(client_a, batch, zip_data(DOCUMENTS))
    worker_dir = tmp_path / "worker-host"
    worker_dir.mkdir()
    cluster = cluster_factory(
        env={
            **s3.environ(),
            "BATCHSITE_DATA_DIR": str(worker_dir),
            "BATCHSITE_SIGNING_KEY": str(settings.BATCHSITE_SIGNING_KEY),
            "BATCHSITE_SIGNING_CERT": str(settings.BATCHSITE_SIGNING_CERT),
        }
    )

    assert client_a.post(batch_url(batch, "commit/")).status_code == 200
    wait_for(lambda: Batch.objects.get(pk=batch["id"]).is_terminal, timeout=90)

    done = Batch.objects.get(pk=batch["id"])
    assert done.status == Batch.Status.FINISHED, cluster.output()[-3000:]
    assert done.succeeded_items == len(DOCUMENTS)
    assert len(s3.keys(f"{s3.prefix}/batches/{done.pk}/out/")) == 2 * len(DOCUMENTS)
    assert local_files(worker_dir / "files") == []
    assert local_files(settings.MEDIA_ROOT) == []
    _, manifest = package_of(client_a, batch)
    assert len(manifest["files"]) == 2 * len(DOCUMENTS)


def test_s3__package_redirect_sends_the_client_to_a_presigned_url_of_the_stored_package(
    s3, signer, client_a, settings, django_capture_on_commit_callbacks
):
    settings.BATCHSITE_PACKAGE_REDIRECT = True
    batch = signed_batch(client_a, django_capture_on_commit_callbacks)

    first = client_a.get(batch_url(batch, "package/"))
    again = client_a.get(batch_url(batch, "package/"))

    assert first.status_code == again.status_code == 302
    [stored] = s3.keys(f"{s3.prefix}/batches/{batch.pk}/package/")  # built once
    url = first["Location"]
    assert url.startswith(f"{s3.endpoint}/")
    assert "Signature" in url
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200
    disposition = f'attachment; filename="batch-{batch.number}-package.zip"'
    assert fetched.headers["content-disposition"] == disposition
    assert fetched.content == s3.read(stored)
    archive = zipfile.ZipFile(io.BytesIO(fetched.content))
    manifest = json.loads(archive.read("manifest.json"))
    assert len(manifest["files"]) == 2 * len(DOCUMENTS)
    for entry in manifest["files"]:
        assert hashlib.sha256(archive.read(entry["name"])).hexdigest() == entry["sha256"]
    assert httpx.get(url.split("?")[0], timeout=30).status_code == 403  # not public

    with django_capture_on_commit_callbacks(execute=True):
        rerun = client_a.post(batch_url(batch, "rerun/"), {"items": "all"}, format="json")
    assert rerun.status_code == 200, rerun.content
    rebuilt = client_a.get(batch_url(batch, "package/"))
    assert rebuilt.status_code == 302
    assert rebuilt["Location"] != url
    assert s3.keys(f"{s3.prefix}/batches/{batch.pk}/package/") != [stored]


def test_package_redirect__on_the_file_system_the_package_streams(
    signer, client_a, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.BATCHSITE_PACKAGE_REDIRECT = True
    batch = signed_batch(client_a, django_capture_on_commit_callbacks)

    _, manifest = package_of(client_a, batch)

    assert len(manifest["files"]) == 2 * len(DOCUMENTS)
