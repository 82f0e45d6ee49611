"""The Centrapay dialect, used as a Centrapay client would, from the documented shapes.

The batch file is served by a real HTTP server on loopback (pytest-httpserver); the
allow-list names `localhost`. django-q2 runs in sync mode, so the ingest task (and the
chunks it queues) run inline once the create's on-commit callbacks run.
"""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from batches import services, tasks
from batches.compat.centrapay import serializers
from batches.models import Batch, Chunk
from jobs import job_types
from jobs.echo import Echo
from tests.factories import open_batch
from tests.helpers.api import serve
from tests.helpers.files import SNIFFED_FILES, UNRECOGNISABLE, jsonl_text

BATCHES = "/compat/centrapay/api/batches"
BATCH_TYPES = "/compat/centrapay/api/batch-types"
NOT_FOUND = {"message": "Batch not found"}


@pytest.fixture(autouse=True)
def _allow_localhost(settings):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]


def key_client(account) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=services.api_key_create(account=account)[1])
    return client


@pytest.fixture
def client(account) -> APIClient:
    return key_client(account)


@pytest.fixture
def other_client(other_account) -> APIClient:
    return key_client(other_account)


def failure(response, status_code: int) -> dict:
    """Return the body of a failure, checking it is Centrapay's shape, not a problem."""
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"message"}
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def create(client, account, url: str, **fields):
    body = {"type": "echo", "url": url, "accountId": str(account.number), **fields}
    return client.post(BATCHES, body, format="json")


def poll(client, batch_id: str) -> dict:
    response = client.get(f"{BATCHES}/{batch_id}")
    assert response.status_code == 200, response.content
    return response.json()


# --- the documented flow ------------------------------------------------------------------------


def test_centrapay__create_from_a_file_url_and_poll_to_complete(
    client, account, httpserver, django_capture_on_commit_callbacks
):
    url = serve(httpserver, "/assets.jsonl", jsonl_text([{"payload": {"n": n}} for n in range(3)]))

    with django_capture_on_commit_callbacks(execute=True):
        response = create(client, account, url)

    assert response.status_code == 200, response.content
    created = response.json()
    assert created == {
        "id": created["id"],
        "status": "created",
        "type": "echo",
        "count": "0",
        "errorCount": "0",
        "errors": [],
    }
    uuid.UUID(created["id"])
    assert poll(client, created["id"]) == {
        "id": created["id"],
        "status": "complete",
        "type": "echo",
        "count": "3",
        "errorCount": "0",
        "errors": [],
    }
    batch = Batch.objects.get(pk=created["id"])
    assert batch.account == account
    assert batch.succeeded_items == 3


def test_centrapay__lifecycle_is_created_copied_chunked_complete(
    client, account, httpserver, monkeypatch, django_capture_on_commit_callbacks
):
    # One item per chunk, so one worker step leaves the batch part-way.
    monkeypatch.setattr(Echo, "chunk_size", 1)
    url = serve(httpserver, "/assets.jsonl", jsonl_text([{"payload": {"n": n}} for n in range(2)]))
    with django_capture_on_commit_callbacks() as ingest:
        batch_id = create(client, account, url).json()["id"]
    assert poll(client, batch_id)["status"] == "created"

    with django_capture_on_commit_callbacks() as chunks_queued:
        for callback in ingest:
            callback()
    copied = poll(client, batch_id)
    assert copied["status"] == "copied"
    assert copied["count"] == "2"

    chunks = Chunk.objects.filter(batch_id=batch_id).order_by("start_index")
    with django_capture_on_commit_callbacks(execute=True):
        tasks.chunk_run(chunks[0].pk)
    assert poll(client, batch_id)["status"] == "chunked"

    with django_capture_on_commit_callbacks(execute=True):
        tasks.chunk_run(chunks[1].pk)
    assert poll(client, batch_id)["status"] == "complete"
    assert len(chunks_queued) == 1


def test_centrapay__a_bad_line_is_an_error_with_its_index(
    client, account, httpserver, django_capture_on_commit_callbacks
):
    lines: list = [{"external_id": f"e{n}", "payload": {"n": n}} for n in range(8)]
    lines[5] = "{not json"
    url = serve(httpserver, "/assets.jsonl", jsonl_text(lines))

    with django_capture_on_commit_callbacks(execute=True):
        batch_id = create(client, account, url).json()["id"]

    batch = poll(client, batch_id)
    assert batch["status"] == "complete"
    assert batch["count"] == "7"
    assert batch["errorCount"] == "1"
    assert len(batch["errors"]) == 1
    error = batch["errors"][0]
    assert error["index"] == "5"
    assert set(error) == {"index", "message"}
    assert error["message"]


def test_centrapay__a_refused_line_names_its_external_id(
    client, account, httpserver, django_capture_on_commit_callbacks
):
    lines: list = [{"external_id": f"e{n}", "payload": {"n": n}} for n in range(8)]
    lines[5] = {"external_id": "1234", "payload": {"fail": "not a boolean"}}
    url = serve(httpserver, "/assets.jsonl", jsonl_text(lines))

    with django_capture_on_commit_callbacks(execute=True):
        batch_id = create(client, account, url).json()["id"]

    batch = poll(client, batch_id)
    assert batch["errorCount"] == "1"
    assert batch["errors"] == [
        {"externalId": "1234", "index": "5", "message": "payload.fail: must be true or false"}
    ]


def test_centrapay__items_that_fail_when_run_are_errors_with_their_line_in_the_file(
    client, account, httpserver, django_capture_on_commit_callbacks
):
    lines: list = [
        {"external_id": "e0", "payload": {}},
        "{not json",
        {"external_id": "e2", "payload": {"fail": True}},
        {"payload": {}},
        {"payload": {"fail": True}},
        {"external_id": "1234", "payload": {"fail": "not a boolean"}},
        {"external_id": "e6", "payload": {"fail": True}},
    ]
    url = serve(httpserver, "/assets.jsonl", jsonl_text(lines))

    with django_capture_on_commit_callbacks(execute=True):
        batch_id = create(client, account, url).json()["id"]

    failed = "the payload asked echo to fail"
    assert poll(client, batch_id) == {
        "id": batch_id,
        "status": "complete",
        "type": "echo",
        "count": "5",
        "errorCount": "5",
        "errors": [
            {
                "index": "1",
                "message": (
                    "line: is not JSON: Expecting property name enclosed in double quotes: "
                    "line 1 column 2 (char 1)"
                ),
            },
            {"externalId": "1234", "index": "5", "message": "payload.fail: must be true or false"},
            {"externalId": "e2", "index": "2", "message": failed},
            {"index": "4", "message": failed},
            {"externalId": "e6", "index": "6", "message": failed},
        ],
    }
    batch = Batch.objects.get(pk=batch_id)
    assert (batch.error_count, batch.failed_items, batch.succeeded_items) == (2, 3, 2)


def test_centrapay__errors_lists_the_first_ones_and_error_count_counts_them_all(
    client, account, httpserver, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(serializers, "ERRORS_SHOWN", 3)
    lines: list = ["{bad", "{bad"] + [
        {"external_id": f"f{n}", "payload": {"fail": True}} for n in range(3)
    ]
    url = serve(httpserver, "/assets.jsonl", jsonl_text(lines))

    with django_capture_on_commit_callbacks(execute=True):
        batch_id = create(client, account, url).json()["id"]

    batch = poll(client, batch_id)
    assert (batch["count"], batch["errorCount"]) == ("3", "5")
    assert [(error["index"], error.get("externalId")) for error in batch["errors"]] == [
        ("0", None),
        ("1", None),
        ("2", "f0"),
    ]


def test_centrapay__an_item_added_without_a_file_is_named_by_its_index_in_the_batch(
    client, account, django_capture_on_commit_callbacks
):
    batch = open_batch(
        account=account, items=[{"payload": {}}, {"external_id": "x", "payload": {"fail": True}}]
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_commit(batch=batch, actor="test")

    assert poll(client, str(batch.pk)) == {
        "id": str(batch.pk),
        "status": "complete",
        "type": "echo",
        "count": "2",
        "errorCount": "1",
        "errors": [{"externalId": "x", "index": "1", "message": "the payload asked echo to fail"}],
    }


@pytest.mark.parametrize(("fmt", "body", "job_type"), SNIFFED_FILES)
def test_centrapay__a_file_url_without_extension_is_read_by_its_content(
    client, account, httpserver, django_capture_on_commit_callbacks, fmt, body, job_type
):
    # As in Centrapay's own example: `"url": "https://azurebuckets.com/1234"`.
    url = serve(httpserver, "/1234", body, content_type="application/octet-stream")

    with django_capture_on_commit_callbacks(execute=True):
        batch_id = create(client, account, url, type=job_type).json()["id"]

    assert poll(client, batch_id) == {
        "id": batch_id,
        "status": "complete",
        "type": job_type,
        "count": "2",
        "errorCount": "0",
        "errors": [],
    }


@pytest.mark.parametrize("body", UNRECOGNISABLE)
def test_centrapay__a_file_of_no_known_format_ends_in_error(
    client, account, httpserver, django_capture_on_commit_callbacks, body
):
    url = serve(httpserver, "/1234", body, content_type="application/octet-stream")

    with django_capture_on_commit_callbacks(execute=True):
        batch_id = create(client, account, url).json()["id"]

    assert poll(client, batch_id) == {
        "id": batch_id,
        "status": "error",
        "type": "echo",
        "count": "0",
        "errorCount": "1",
        "errors": [
            {
                "message": (
                    "cannot tell the format of the source (Content-Type "
                    "'application/octet-stream'): its content is none of JSON Lines, a JSON "
                    "array of items, CSV (a header row of comma-separated column names) or ZIP"
                )
            }
        ],
    }


def test_centrapay__an_unreadable_file_ends_in_error(
    client, account, httpserver, django_capture_on_commit_callbacks
):
    url = serve(httpserver, "/missing.jsonl", "gone", status=404)

    with django_capture_on_commit_callbacks(execute=True):
        response = create(client, account, url)
    assert response.status_code == 200
    assert response.json()["status"] == "created"

    batch = poll(client, response.json()["id"])
    assert batch == {
        "id": response.json()["id"],
        "status": "error",
        "type": "echo",
        "count": "0",
        "errorCount": "1",
        "errors": [{"message": "the source answered HTTP 404"}],
    }


# --- refusals -----------------------------------------------------------------------------------


def test_centrapay__another_accounts_id_is_403(client, account, other_account, httpserver):
    url = serve(httpserver, "/assets.jsonl", jsonl_text([{"payload": {}}]))

    response = create(client, account, url, accountId=str(other_account.number))

    assert failure(response, 403) == {
        "message": "accountId names an account this API key cannot act for"
    }
    assert not Batch.objects.exists()


def test_centrapay__account_id_may_be_the_accounts_name(
    client, account, httpserver, django_capture_on_commit_callbacks
):
    url = serve(httpserver, "/assets.jsonl", jsonl_text([{"payload": {}}]))

    with django_capture_on_commit_callbacks(execute=True):
        response = create(client, account, url, accountId=account.name)

    assert response.status_code == 200, response.content
    batch = Batch.objects.get(pk=response.json()["id"])
    assert batch.account == account
    assert poll(client, str(batch.pk))["status"] == "complete"


@pytest.mark.parametrize(
    "account_id",
    [
        lambda other: other.name,
        lambda other: str(other.number),
        lambda other: "no-such-account",
        lambda other: str(other.number + 1000),
    ],
    ids=["other-name", "other-number", "unknown-name", "unknown-number"],
)
def test_centrapay__any_account_but_the_keys_own_is_the_same_403(
    client, account, other_account, httpserver, account_id
):
    url = serve(httpserver, "/assets.jsonl", jsonl_text([{"payload": {}}]))

    response = create(client, account, url, accountId=account_id(other_account))

    assert failure(response, 403) == {
        "message": "accountId names an account this API key cannot act for"
    }
    assert not Batch.objects.exists()


def test_centrapay__missing_fields_are_400(client, account):
    response = client.post(BATCHES, {"type": "echo"}, format="json")

    assert failure(response, 400) == {
        "message": "url: This field is required.; accountId: This field is required."
    }
    assert not Batch.objects.exists()


def test_centrapay__unknown_batch_type_is_400(client, account, httpserver):
    url = serve(httpserver, "/assets.jsonl", jsonl_text([{"payload": {}}]))

    response = create(client, account, url, type="farmlands-external-asset")

    assert failure(response, 400) == {
        "message": (
            "type: unknown batch type 'farmlands-external-asset'; GET /api/batch-types lists them"
        )
    }
    assert not Batch.objects.exists()


def test_centrapay__a_url_outside_the_allow_list_is_400(client, account):
    response = create(client, account, "https://azurebuckets.example/1234")

    assert failure(response, 400) == {
        "message": ("url: host 'azurebuckets.example' is not in BATCHSITE_OUTBOUND_ALLOWED_HOSTS")
    }
    assert not Batch.objects.exists()


def test_centrapay__missing_key_is_401(db, account):
    response = APIClient().post(BATCHES, {"type": "echo"}, format="json")

    assert failure(response, 401) == {"message": "An API key is required in the X-Api-Key header"}


def test_centrapay__invalid_key_is_401(db):
    client = APIClient()
    client.credentials(HTTP_X_API_KEY="nope.nope")

    assert failure(client.get(BATCH_TYPES), 401) == {"message": "Invalid API key."}


def test_centrapay__key_in_the_authorization_header_is_not_this_dialects_way(db, account):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {services.api_key_create(account=account)[1]}")

    failure(client.get(BATCH_TYPES), 401)


def test_centrapay__unknown_batch_is_404(client):
    assert failure(client.get(f"{BATCHES}/{uuid.uuid4()}"), 404) == NOT_FOUND
    assert failure(client.get(f"{BATCHES}/abc1234"), 404) == NOT_FOUND


def test_centrapay__another_accounts_batch_is_404(
    client, other_client, account, httpserver, django_capture_on_commit_callbacks
):
    url = serve(httpserver, "/assets.jsonl", jsonl_text([{"payload": {}}]))
    with django_capture_on_commit_callbacks(execute=True):
        batch_id = create(client, account, url).json()["id"]

    assert failure(other_client.get(f"{BATCHES}/{batch_id}"), 404) == NOT_FOUND
    assert poll(client, batch_id)["status"] == "complete"


def test_centrapay__unsupported_method_is_405(client):
    assert failure(client.get(BATCHES), 405) == {"message": 'Method "GET" not allowed.'}
    response = client.delete(f"{BATCHES}/{uuid.uuid4()}")
    assert failure(response, 405) == {"message": 'Method "DELETE" not allowed.'}


def test_centrapay__malformed_json_is_400(client):
    response = client.post(BATCHES, "{", content_type="application/json")

    assert failure(response, 400)["message"].startswith("JSON parse error")


def test_centrapay__unknown_path_is_404_in_the_dialects_shape(client):
    failure(client.get("/compat/centrapay/api/nope"), 404)


# --- batch types and schema ---------------------------------------------------------------------


def test_centrapay__batch_types_lists_every_registered_type(client):
    response = client.get(BATCH_TYPES)

    assert response.status_code == 200
    listed = response.json()
    assert listed == [
        {"name": job_type.name, "description": job_type.description}
        for job_type in sorted(job_types().values(), key=lambda job_type: job_type.name)
    ]
    assert {"name": "echo", "description": Echo.description} in listed


def test_centrapay__schema_lists_every_endpoint_under_its_tag(db):
    response = APIClient().get("/compat/centrapay/schema/?format=json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        BATCHES: {"post"},
        f"{BATCHES}/{{id}}": {"get"},
        BATCH_TYPES: {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert set(paths[path]) == methods
        for method in methods:
            assert paths[path][method]["tags"] == ["compat: centrapay"], (path, method)
    assert set(paths) == set(expected)
