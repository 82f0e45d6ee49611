"""What API tests share: the paths, the problem-document assertion, and batches made, run and
filled through the API."""

from __future__ import annotations

from rest_framework.test import APIClient

from batches import services
from batches.models import ApiKey, Batch, BatchError, BatchEvent, Chunk, Item

API = "/api/v1"
BATCHES = f"{API}/batches/"
PROBLEM = "application/problem+json"
ZIP = "application/zip"
JSONL = "application/x-ndjson"


def assert_problem(response, status: int, code: str) -> dict:
    """Assert `response` is an RFC 9457 problem document with `status` and `code`; return it."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    for member in ("type", "title", "detail"):
        assert isinstance(body[member], str), member
        assert body[member], member
    if status == 400:
        assert isinstance(body.get("errors"), list), "a 400 must say what is wrong in `errors`"
        assert body["errors"], "a 400 must say what is wrong in `errors`"
    return body


def problem_content(response) -> dict:
    """Return a JSON error body without the members that name its occurrence.

    A problem document's `request_id` and `instance` differ on every request; they are
    checked against the response's X-Request-ID and left out, so that the rest can be
    compared whole. Other bodies (a dialect's) are returned as they are.
    """
    body = response.json()
    if "request_id" in body:
        request_id = body.pop("request_id")
        assert request_id == response["X-Request-ID"]
        assert body.pop("instance") == f"urn:uuid:{request_id}"
    return body


def error_fields(body: dict) -> set[str]:
    """Return the fields a 400 names: `field`, or `[index].field` for a refused item."""
    fields = set()
    for error in body["errors"]:
        fields.add(f"[{error['index']}].{error['field']}" if "index" in error else error["field"])
    return fields


def row_counts() -> dict[str, int]:
    """Count the rows of every table a request could write to."""
    return {
        model.__name__: model.objects.count()
        for model in (Batch, Item, BatchEvent, BatchError, Chunk)
    }


def create_batch(client, **body) -> dict:
    """Create a batch through the API and return its JSON."""
    response = client.post(BATCHES, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def batch_url(batch, suffix: str = "") -> str:
    """Return the URL of a batch (a Batch, a JSON dict or an id), plus `suffix`."""
    batch_id = batch["id"] if isinstance(batch, dict) else getattr(batch, "pk", batch)
    return f"{BATCHES}{batch_id}/{suffix}"


def key_for(account) -> tuple[ApiKey, APIClient]:
    """Return a new key of `account` and a client that uses it."""
    key, raw = services.api_key_create(account=account, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return key, client


def run_commit(client, batch, django_capture_on_commit_callbacks) -> Batch:
    """Commit through the API and let the (sync) workers run the batch to its end."""
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(batch_url(batch, "commit/"))
    assert response.status_code == 200, response.content
    batch_id = batch["id"] if isinstance(batch, dict) else batch.pk
    return Batch.objects.get(pk=batch_id)


def upload(client, batch, data: bytes, content_type: str = ZIP) -> dict:
    """Upload a file to the batch through the API and return the report."""
    response = client.post(batch_url(batch, "upload/"), data=data, content_type=content_type)
    assert response.status_code == 200, response.content
    return response.json()


def serve(httpserver, path: str, body, *, content_type: str = JSONL, status: int = 200) -> str:
    """Serve `body` at `path` on the test HTTP server; return its URL."""
    httpserver.expect_request(path).respond_with_data(
        body, status=status, content_type=content_type
    )
    return httpserver.url_for(path)
