"""A crash answers 500 in each surface's own error shape, as JSON: never Django's HTML page.

The crash is logged with its traceback; the body says nothing of it.
"""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.test import Client

from batches import services
from tests.helpers.api import problem_content

API_SERVER_ERROR = {
    "type": "urn:batchsite:problem:server_error",
    "title": "Server error",
    "status": 500,
    "detail": "The server failed to handle this request.",
    "code": "server_error",
}
SECRET = "SELECT secret FROM x"


@pytest.fixture
def key(account) -> str:
    return services.api_key_create(account=account, name="crash")[1]


@pytest.fixture(params=[RuntimeError, RecursionError], ids=["RuntimeError", "RecursionError"])
def crashing_create(request, monkeypatch):
    """Make every batch creation crash, as a bug in a service would."""
    error = request.param

    def crash(*args, **kwargs):
        raise error(SECRET)

    monkeypatch.setattr(services, "batch_create", crash)
    return error


def post(path: str, body: dict, **headers):
    client = Client(raise_request_exception=False)
    return client.post(path, json.dumps(body), content_type="application/json", **headers)


def api(account, key):
    return post("/api/v1/batches/", {"type": "echo"}, HTTP_AUTHORIZATION=f"Api-Key {key}")


def brightlocal(account, key):
    return post("/compat/brightlocal/seo-tools/api/v4/batch", {"api-key": key})


def centrapay(account, key):
    body = {"type": "echo", "url": "http://localhost/x.jsonl", "accountId": str(account.number)}
    return post("/compat/centrapay/api/batches", body, HTTP_X_API_KEY=key)


def dlcs(account, key):
    body = {"member": [{"id": "a", "origin": "http://localhost/a.png"}]}
    path = f"/compat/dlcs/customers/{account.number}/queue"
    return post(path, body, HTTP_AUTHORIZATION=f"Api-Key {key}")


def signing(account, key):
    return post("/compat/signing/api/CreateBatch/1", {}, HTTP_AUTHORIZATION=f"Api-Key {key}")


SERVER_ERRORS = {
    api: API_SERVER_ERROR,
    brightlocal: {
        "success": False,
        "errors": {"SERVER_ERROR": "The server failed to handle this request."},
    },
    centrapay: {"message": "The server failed to handle this request."},
    dlcs: {
        "@context": "http://www.w3.org/ns/hydra/context.jsonld",
        "@type": "Error",
        "statusCode": 500,
        "title": "Internal Server Error",
        "description": "The server failed to handle this request.",
    },
    signing: {"error": "The server failed to handle this request."},
}


@pytest.mark.parametrize("surface", SERVER_ERRORS, ids=lambda surface: surface.__name__)
def test_crash__answers_500_in_the_surfaces_own_shape(
    surface, crashing_create, account, key, settings, caplog
):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]

    response = surface(account, key)

    assert response.status_code == 500, response.content[:300]
    assert response["Content-Type"].startswith("application/")
    assert "html" not in response["Content-Type"]
    assert problem_content(response) == SERVER_ERRORS[surface]
    assert SECRET.encode() not in response.content
    logged = [record for record in caplog.records if record.exc_info]
    assert any(isinstance(record.exc_info[1], crashing_create) for record in logged)


@pytest.mark.parametrize("surface", SERVER_ERRORS, ids=lambda surface: surface.__name__)
def test_crash__with_debug_on_is_left_to_djangos_debug_page(
    surface, crashing_create, account, key, settings
):
    settings.DEBUG = True
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]

    response = surface(account, key)

    assert response.status_code == 500
    assert SECRET.encode() in response.content


@pytest.fixture
def refusing_create(monkeypatch):
    """Make batch creation raise Django's PermissionDenied, as a permission check would."""

    def refuse(*args, **kwargs):
        raise DjangoPermissionDenied("no")

    monkeypatch.setattr(services, "batch_create", refuse)


@pytest.mark.parametrize("surface", SERVER_ERRORS, ids=lambda surface: surface.__name__)
def test_permission_denied__is_403_in_the_surfaces_own_shape(
    surface, refusing_create, account, key, settings
):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]

    response = surface(account, key)

    assert response.status_code == 403, response.content[:300]
    assert "html" not in response["Content-Type"]
    assert response.json() != SERVER_ERRORS[surface]
