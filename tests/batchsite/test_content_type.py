"""A Content-Type Django cannot build a request from is answered, never the server's 500.

Django raised while building the request, before any middleware or view, for an RFC 2231
parameter naming an unknown charset, and for a charset that is a bytes codec once the
URL had a query string; the WSGI and ASGI entry points now pass such a Content-Type on
as its bare media type.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from batches import services
from batches.models import Batch
from batchsite.content_type import usable_content_type
from tests.helpers import wsgi_request

JSON = "application/json"


@pytest.mark.parametrize(
    ("content_type", "usable"),
    [
        (JSON, JSON),
        ("application/json; charset=utf-8", "application/json; charset=utf-8"),
        ("application/json; charset=utf-16", "application/json; charset=utf-16"),
        ("multipart/form-data; boundary=x", "multipart/form-data; boundary=x"),
        ("application/json; charset=bz2_codec", JSON),
        ('application/json; charset="rot13"', JSON),
        ("application/json; charset=no-such", JSON),
        ("application/json; charset*=no-such''utf-8", JSON),
        ("multipart/form-data; boundary*=no-such''x", "multipart/form-data"),
    ],
)
def test_usable_content_type__keeps_what_django_can_read(content_type, usable):
    assert usable_content_type(content_type) == usable


@pytest.fixture
def post(wsgi_app, account):
    """POST to batchsite's WSGI application with a key of `account`."""
    _, key = services.api_key_create(account=account, name="wsgi")

    def send(path: str, body: bytes, content_type: str):
        auth = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
        return wsgi_request(wsgi_app, "POST", path, body, content_type, **auth)

    return send


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=bz2_codec",  # a bytes codec, with a query string
        "application/json; charset*=utf-8''rot13",
        "application/json; charset*=no-such''utf-8",  # RFC 2231, an unknown charset
    ],
)
def test_wsgi__a_content_type_django_cannot_read_is_read_as_json(post, content_type):
    response = post("/api/v1/batches/?note=1", b'{"label": "read as UTF-8"}', content_type)

    assert response.status_code == 201, response.content
    assert Batch.objects.get().label == "read as UTF-8"


def test_wsgi__a_multipart_body_whose_boundary_cannot_be_read_is_400(post):
    path = "/compat/signing/api/CreateBatch/1?x=1"

    response = post(path, b"--x\r\n", "multipart/form-data; boundary*=no-such''x")

    assert response.status_code == 400, response.content
    assert "error" in json.loads(response.content)


def test_asgi__a_content_type_django_cannot_read_is_answered():
    from batchsite.asgi import application

    async def request():
        communicator = ApplicationCommunicator(
            application,
            {
                "type": "http",
                "method": "POST",
                "path": "/api/v1/batches/",
                "query_string": b"a=1",
                "server": ("127.0.0.1", 8000),
                "headers": [
                    (b"host", b"127.0.0.1"),
                    (b"content-type", b"application/json; charset*=no-such''utf-8"),
                ],
            },
        )
        await communicator.send_input({"type": "http.request", "body": b"{}"})
        start = await communicator.receive_output(timeout=10)
        body = await communicator.receive_output(timeout=10)
        return start, body

    start, body = async_to_sync(request)()

    # No key: the request got as far as authentication, and was answered there.
    assert start["status"] == 401
    assert json.loads(body["body"])["code"] == "not_authenticated"
