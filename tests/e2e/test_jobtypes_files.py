"""The file job types end to end: ZIP upload, a real qcluster, the batch package.

These need image.derive, document.sign and document.verify registered as built-ins
(jobs.registry.BUILTIN_TYPES): the qcluster subprocess reads its job types from
settings, not from a test's overrides.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile

import pytest
from cryptography import x509
from django.core.management import call_command
from PIL import Image

from batches.models import Batch, Item
from jobs import get_job_type
from jobs.signer import signer_paths
from tests.e2e.helpers import wait_terminal
from tests.helpers.api import batch_url, create_batch

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

ZIP = "application/zip"


def require_builtin(*names: str) -> None:
    missing = [name for name in names if get_job_type(name) is None]
    assert not missing, f"register {missing} in jobs.registry.BUILTIN_TYPES first"


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def image_bytes(size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize(size).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def run_batch(client, cluster, job_type: str, files: dict[str, bytes]) -> Batch:
    """Upload `files` as a ZIP to a new batch of `job_type`, commit it and wait for its end."""
    batch = create_batch(client, type=job_type)
    uploaded = client.generic("POST", batch_url(batch, "upload/"), zip_of(files), ZIP)
    assert uploaded.status_code == 200, uploaded.content
    assert uploaded.json()["added"] == len(files)
    committed = client.post(batch_url(batch, "commit/"))
    assert committed.status_code == 200, committed.content
    return wait_terminal(batch["id"], cluster)


def package_of(client, batch: Batch) -> zipfile.ZipFile:
    response = client.get(batch_url(batch, "package/"))
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    manifest = json.loads(archive.read("manifest.json"))
    for entry in manifest["files"]:
        assert entry["sha256"] == hashlib.sha256(archive.read(entry["name"])).hexdigest()
    return archive


@pytest.fixture
def signer() -> None:
    """Make sure a signer exists where the qcluster subprocess looks: the default paths.

    The data dir reaches the subprocess through the environment (tests/settings.py). An
    existing signer there is used as it is rather than replaced.
    """
    if not all(path.exists() for path in signer_paths()):
        call_command("createsigningkey", "--common-name", "E2E Signer", stdout=io.StringIO())


def test_cluster__image_derive_batch_packages_derivatives(client_a, cluster):
    require_builtin("image.derive")
    files = {
        "wide.png": image_bytes((800, 400), "PNG"),
        "tall.jpg": image_bytes((300, 600), "JPEG"),
        "square.webp": image_bytes((250, 250), "WEBP"),
    }

    batch = run_batch(client_a, cluster, "image.derive", files)

    assert batch.status == Batch.Status.FINISHED, cluster.output()[-3000:]
    assert batch.counts()["succeeded"] == len(files)
    archive = package_of(client_a, batch)
    # ZIP members carry an empty payload, so the default boxes apply (100, 200, 400, 1024).
    expected = {
        "wide_100x100.jpg": (100, 50),
        "wide_1024x1024.jpg": (800, 400),
        "tall_200x200.jpg": (100, 200),
        "tall_400x400.jpg": (200, 400),
        "square_100x100.jpg": (100, 100),
        "square_1024x1024.jpg": (250, 250),
    }
    assert set(expected) <= set(archive.namelist())
    assert len(archive.namelist()) == 3 * 4 + 1
    for name, size in expected.items():
        with Image.open(io.BytesIO(archive.read(name))) as derived:
            assert (derived.format, derived.size) == ("JPEG", size)
    result = Item.objects.get(batch=batch, external_id="wide.png").result
    assert result["source"] == {"width": 800, "height": 400, "format": "png"}


def test_cluster__document_sign_package_verifies_with_openssl(client_a, cluster, signer, tmp_path):
    require_builtin("document.sign")
    documents = {
        "contract.pdf": b"%PDF-1.7\n" + bytes(range(256)) * 100,
        "terms.txt": b"terms\r\nand conditions\n",
        "scan.bin": b"\x00\r\n" * 5000,
    }

    batch = run_batch(client_a, cluster, "document.sign", documents)

    assert batch.status == Batch.Status.FINISHED, cluster.output()[-3000:]
    assert batch.counts()["succeeded"] == len(documents)
    archive = package_of(client_a, batch)
    assert set(archive.namelist()) == {
        *documents,
        *(f"{name}.p7s" for name in documents),
        "manifest.json",
    }
    folder = tmp_path / "package"
    archive.extractall(folder)
    for name, data in documents.items():
        assert (folder / name).read_bytes() == data
        command = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-noverify"]
        command += ["-content", str(folder / name), "-in", str(folder / f"{name}.p7s")]
        checked = subprocess.run([*command, "-out", "/dev/null"], capture_output=True, check=False)
        assert checked.returncode == 0, checked.stderr.decode()
    _, cert_path = signer_paths()
    subject = x509.load_pem_x509_certificate(cert_path.read_bytes()).subject.rfc4514_string()
    results = Item.objects.filter(batch=batch).values_list("result", flat=True)
    assert {result["signer"] for result in results} == {subject}


def test_cluster__document_verify_batch_of_zip_pairs(client_a, cluster, signer, tmp_path):
    require_builtin("document.sign", "document.verify")
    signed = run_batch(client_a, cluster, "document.sign", {"a.txt": b"alpha"})
    assert signed.status == Batch.Status.FINISHED, cluster.output()[-3000:]
    archive = package_of(client_a, signed)
    document, signature = archive.read("a.txt"), archive.read("a.txt.p7s")
    pairs = {
        "good.zip": zip_of({"a.txt": document, "a.txt.p7s": signature}),
        "tampered.zip": zip_of({"a.txt": b"alphb", "a.txt.p7s": signature}),
    }

    batch = run_batch(client_a, cluster, "document.verify", pairs)

    assert batch.status == Batch.Status.FINISHED, cluster.output()[-3000:]
    results = dict(Item.objects.filter(batch=batch).values_list("external_id", "result"))
    assert results["good.zip"]["valid"] is True
    assert results["tampered.zip"]["valid"] is False
