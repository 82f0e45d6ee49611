"""The Python client's package download against a real S3-compatible store (moto's server).

With BATCHSITE_PACKAGE_REDIRECT the API answers with a redirect to a presigned URL of the
object store: the client follows it, and the API key stays with the API's host.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.management import call_command

from batches import services
from batchsite_client import Client
from tests.client.conftest import CountingTransport

pytestmark = [pytest.mark.s3, pytest.mark.django_db(transaction=True)]

DOCUMENTS = {"contract.pdf": b"%PDF-1.7\n" + bytes(range(256)) * 40, "notes.txt": b"two\nlines"}


@pytest.fixture
def signer(settings, tmp_path):
    """Make document.sign's key and certificate for the live server's (inline) workers."""
    settings.BATCHSITE_SIGNING_KEY = tmp_path / "signer" / "key.pem"
    settings.BATCHSITE_SIGNING_CERT = tmp_path / "signer" / "cert.pem"
    call_command("createsigningkey", "--common-name", "Client Signer", stdout=io.StringIO())


def test_client__package_redirect_is_followed_without_the_api_key(
    s3, signer, live_server, account, settings, tmp_path
):
    settings.BATCHSITE_PACKAGE_REDIRECT = True
    _, key = services.api_key_create(account=account, name="client")
    documents = tmp_path / "documents.zip"
    with zipfile.ZipFile(documents, "w") as archive:
        for name, data in DOCUMENTS.items():
            archive.writestr(name, data)
    transport = CountingTransport()

    with Client(live_server.url, key, transport=transport) as client:
        batch = client.create_batch(type="document.sign")
        client.upload(batch, documents)
        client.commit(batch)
        assert client.wait(batch, poll_interval=0.1, timeout=60)["status"] == "finished"
        transport.requests.clear()
        saved = client.download_package(batch, tmp_path / "signed.zip")

    to_api, to_store = transport.requests
    assert to_api.headers["Authorization"] == f"Api-Key {key}"
    assert str(to_store.url).startswith(f"{s3.endpoint}/")
    assert "Authorization" not in to_store.headers
    assert saved == (tmp_path / "signed.zip").stat().st_size
    package = zipfile.ZipFile(tmp_path / "signed.zip")
    assert {"contract.pdf.p7s", "notes.txt.p7s", "manifest.json"} <= set(package.namelist())
    assert package.read("notes.txt") == DOCUMENTS["notes.txt"]
