"""The API's error contract, authentication, content negotiation, schema, docs and job types."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from batches import services
from batches.models import ApiKey
from tests.factories import open_batch
from tests.helpers.api import API, BATCHES, assert_problem, batch_url, key_for, row_counts

# --- problem documents ---------------------------------------------------------------------------


def test_problem__not_found_batch_is_a_problem_document(client_a):
    response = client_a.get(batch_url(uuid.uuid4()))

    assert_problem(response, 404, "not_found")


def test_problem__conflict_is_a_problem_document(client_a, account):
    batch, _ = services.batch_create(account=account, actor="test")

    response = client_a.post(batch_url(batch, "commit/"))

    body = assert_problem(response, 409, "batch_empty")
    not_found = assert_problem(client_a.get(batch_url(uuid.uuid4())), 404, "not_found")
    assert body["type"] != not_found["type"], "each code has its own problem type"


def test_problem__method_not_allowed_is_405(client_a, account):
    batch = open_batch(account=account)

    response = client_a.put(batch_url(batch), {"label": "x"}, format="json")

    assert_problem(response, 405, "method_not_allowed")


def test_problem__unsupported_body_type_is_415_and_writes_nothing(client_a):
    before = row_counts()

    response = client_a.post(BATCHES, "label: x", content_type="text/plain")

    assert_problem(response, 415, "unsupported_media_type")
    assert row_counts() == before


@pytest.mark.parametrize("suffix", ["", "items/"], ids=["create", "items"])
def test_problem__malformed_json_is_invalid_with_errors_and_writes_nothing(
    client_a, account, suffix
):
    batch = open_batch(account=account)
    url = BATCHES if not suffix else batch_url(batch, suffix)
    before = row_counts()

    response = client_a.post(url, '{"label": "x", ', content_type="application/json")

    assert_problem(response, 400, "invalid")
    assert row_counts() == before


@pytest.mark.parametrize("suffix", ["not-a-uuid/", "{id}/items/first/"])
def test_problem__unroutable_api_url_is_a_problem_document(client_a, account, suffix):
    batch = open_batch(account=account)

    response = client_a.get(BATCHES + suffix.format(id=batch.pk))

    assert_problem(response, 404, "not_found")


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix",
    ["job-types/", "batches/", "batches/{id}/", "batches/{id}/items/", "batches/{id}/results/"],
)
def test_auth__missing_key_is_401_with_www_authenticate(account, suffix):
    batch = open_batch(account=account)

    response = APIClient().get(f"{API}/{suffix.format(id=batch.pk)}")

    assert_problem(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Api-Key"


def test_auth__missing_key_writes_nothing(db):
    before = row_counts()

    response = APIClient().post(BATCHES, {"items": [{"payload": {}}]}, format="json")

    assert_problem(response, 401, "not_authenticated")
    assert row_counts() == before


@pytest.mark.parametrize(
    "header",
    [
        "Api-Key not-a-key",
        "Api-Key abcdefgh.0123456789abcdef0123456789abcdef",
        "Api-Key",
        "Api-Key one two",
        "Bearer some-token",
    ],
)
def test_auth__invalid_credentials_are_401(account, header):
    services.api_key_create(account=account)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get(BATCHES)

    assert_problem(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Api-Key"


def test_auth__key_with_a_changed_secret_is_401(account):
    _, raw = services.api_key_create(account=account)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw[:-1]}{'A' if raw[-1] != 'A' else 'B'}")

    response = client.get(BATCHES)

    assert_problem(response, 401, "not_authenticated")


def test_auth__revoked_key_is_401(account):
    key, client = key_for(account)
    assert client.get(BATCHES).status_code == 200

    services.api_key_revoke(key=key)
    response = client.get(BATCHES)

    assert_problem(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Api-Key"


def test_auth__expired_key_is_401(account):
    key, client = key_for(account)
    ApiKey.objects.filter(pk=key.pk).update(expiry_date=timezone.now() - timedelta(minutes=1))

    response = client.get(BATCHES)

    assert_problem(response, 401, "not_authenticated")


def test_auth__key_of_a_disabled_account_is_401(account):
    _, client = key_for(account)
    account.is_active = False
    account.save(update_fields=["is_active"])

    response = client.get(BATCHES)

    assert_problem(response, 401, "not_authenticated")


def test_auth__valid_key_records_its_last_use(account):
    key, client = key_for(account)
    assert key.last_used_at is None

    response = client.get(BATCHES)

    assert response.status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_auth__logged_in_non_staff_user_is_refused(db):
    user = get_user_model().objects.create_user("someone", password="pw")
    client = APIClient()
    client.force_login(user)

    response = client.get(BATCHES)

    assert_problem(response, 403, "permission_denied")


# --- content negotiation -------------------------------------------------------------------------


def test_browsable_api__renders_for_staff(staff_client):
    response = staff_client.get(BATCHES, HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"<html" in response.content


@pytest.mark.parametrize("suffix", ["", "{id}/", "{id}/items/"])
def test_browsable_api__key_user_asking_for_html_never_gets_the_page(client_a, account, suffix):
    batch = open_batch(account=account)

    response = client_a.get(BATCHES + suffix.format(id=batch.pk), HTTP_ACCEPT="text/html")

    assert not response["Content-Type"].startswith("text/html")
    if response.status_code == 406:
        assert_problem(response, 406, "not_acceptable")
    else:
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"


def test_browsable_api__key_user_with_a_browser_accept_header_gets_json(client_a):
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

    response = client_a.get(BATCHES, HTTP_ACCEPT=accept)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


def test_browsable_api__key_user_asking_for_format_api_never_gets_the_page(client_a):
    # `?format=` names export formats here, never a renderer, so the answer stays JSON.
    response = client_a.get(f"{BATCHES}?format=api")

    assert not response["Content-Type"].startswith("text/html")
    assert response["Content-Type"].startswith("application/json")


# --- schema and docs -----------------------------------------------------------------------------


def test_schema__is_served_without_a_key(db):
    response = APIClient().get(f"{API}/schema/")

    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3")


def test_schema__describes_every_endpoint(db):
    response = APIClient().get(f"{API}/schema/?format=json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/v1/job-types/",
        "/api/v1/batches/",
        "/api/v1/batches/{id}/",
        "/api/v1/batches/{id}/items/",
        "/api/v1/batches/{id}/items/{index}/",
        "/api/v1/batches/{id}/commit/",
        "/api/v1/batches/{id}/cancel/",
        "/api/v1/batches/{id}/rerun/",
        "/api/v1/batches/{id}/results/",
        "/api/v1/batches/{id}/errors/",
        "/api/v1/batches/{id}/events/",
    ):
        assert path in paths, path


def test_docs__renders_with_offline_assets(db):
    response = APIClient().get(f"{API}/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in page
    assert "cdn" not in page.lower()
    # Swagger UI's start-up script is a file of its own, not inline (the CSP allows no
    # inline script), and it is what names the schema.
    assert f'<script src="{API}/docs/?script="></script>' in page
    start = APIClient().get(f"{API}/docs/", {"script": ""}).content.decode()
    assert "/api/v1/schema/" in start
    assert "cdn" not in start.lower()


# --- job types -----------------------------------------------------------------------------------


def test_job_types__lists_registered_types_by_name(client_a):
    response = client_a.get(f"{API}/job-types/")

    assert response.status_code == 200
    types = response.json()
    names = [t["name"] for t in types]
    assert names == sorted(names)
    assert {"echo", "test.flaky"} <= set(names)
    echo = types[names.index("echo")]
    assert set(echo) == {
        "name",
        "description",
        "payload_schema",
        "accepts_file",
        "time_limit",
        "max_time_limit",
    }
    assert echo["accepts_file"] is False
    assert (echo["time_limit"], echo["max_time_limit"]) == (660, 660)
    assert set(echo["payload_schema"]["properties"]) == {
        "fail",
        "sleep_ms",
        "transient_failures",
        "time_limit",
    }


def test_job_types__is_read_only(client_a):
    response = client_a.post(f"{API}/job-types/", {"name": "x"}, format="json")

    assert_problem(response, 405, "method_not_allowed")
