"""A job type that is not ready is refused by every dialect, in the dialect's own error shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from batches import services
from batches.models import Batch, Item
from tests.batches.test_readiness import MAIL, NO_MAIL_SERVER, NO_SIGNER, make_signer
from tests.compat import test_brightlocal as brightlocal
from tests.compat import test_centrapay as centrapay
from tests.compat import test_signing as signing

pytestmark = pytest.mark.usefixtures("no_signer")


def test_brightlocal_job_add__unready_job_type_is_refused(account, no_mail_server):
    key = services.api_key_create(account=account)[1]
    client = APIClient()
    batch_id = brightlocal.create(client, key)
    job = {"api-key": key, "batch-id": batch_id, "job-type": "email.send", **MAIL["payload"]}

    response = client.post(brightlocal.JOBS, job)

    assert brightlocal.failure(response, 400) == {
        "success": False,
        "errors": {"JOB_TYPE_NOT_READY": NO_MAIL_SERVER["detail"]},
    }
    assert not Item.objects.exists()


def test_signing_upload__without_a_signer_is_refused(client_a):
    batch_id = int(signing.create(client_a)["id"])

    response = signing.upload(client_a, batch_id, signing.zip_of(signing.DOCUMENTS))

    signing.assert_error(response, 409, NO_SIGNER["detail"])
    assert signing.status_of(client_a, batch_id)["documents"] == []


def test_signing_accept__refused_when_the_signer_went_after_the_upload(client_a):
    make_signer()
    batch_id = signing.uploaded_batch(client_a)
    Path(django_settings.BATCHSITE_SIGNING_KEY).unlink()

    response = client_a.post(f"{signing.API}/AcceptBatch?batchId={batch_id}")

    signing.assert_error(response, 409, NO_SIGNER["detail"])
    assert signing.status_of(client_a, batch_id)["status"] == "UPLOADED"


def test_centrapay_create__unready_batch_type_is_refused(account, settings):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["files.example.com"]
    client = centrapay.key_client(account)

    response = centrapay.create(
        client, account, "https://files.example.com/docs.zip", type="document.sign"
    )

    assert centrapay.failure(response, 409) == {"message": NO_SIGNER["detail"]}
    assert not Batch.objects.exists()
