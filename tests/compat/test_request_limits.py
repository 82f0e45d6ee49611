"""An over-size body is answered 413 in each dialect's own error shape."""

import json

import pytest

from batches import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def raw_key(account):
    return services.api_key_create(account=account, name="test")[1]


def test_brightlocal__over_size_body_is_413_in_its_shape(client, raw_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    body = json.dumps({"api-key": raw_key, "batch-id": "1", "job-type": "echo", "q": "x" * 500})

    response = client.post(
        "/compat/brightlocal/seo-tools/api/v4/batch/jobs", body, content_type="application/json"
    )

    assert response.status_code == 413
    assert response.json()["success"] is False
    assert "errors" in response.json()


def test_centrapay__over_size_body_is_413_in_its_shape(client, raw_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    body = json.dumps({"type": "echo", "url": "http://localhost/" + "x" * 500, "accountId": "1"})

    response = client.post(
        "/compat/centrapay/api/batches", body, content_type="application/json",
        HTTP_X_API_KEY=raw_key,
    )  # fmt: skip

    assert response.status_code == 413
    assert set(response.json()) == {"message"}


def test_dlcs__over_size_body_is_413_as_a_hydra_error(client, raw_key, account, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    body = json.dumps({"@type": "hydra:Collection", "member": [{"id": "x" * 500}]})

    response = client.post(
        f"/compat/dlcs/customers/{account.number}/queue", body, content_type="application/json",
        HTTP_AUTHORIZATION=f"Api-Key {raw_key}",
    )  # fmt: skip

    assert response.status_code == 413
    assert response.json()["@type"] == "Error"
