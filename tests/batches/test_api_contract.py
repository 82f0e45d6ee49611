"""A batch's whole life through the API, each answer checked against the OpenAPI schema.

The live schemathesis run in CI (`.ci/schemathesis.sh`) explores odd input, but seldom gets
a batch to its end; here a batch runs to `finished` (tasks run inline) so that the answers
only an ended batch gives (results, items with errors, the package, a rerun) are checked
against what the schema promises: status code, content type and body.
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import ApiKeyFactory

CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
BATCH = "/api/v1/batches/{id}/"


@pytest.fixture
def api(wsgi_app):
    """Return a caller of one operation: checks its answer against the schema and returns it."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", wsgi_app)
    _, raw = ApiKeyFactory.create_with_raw(name="contract")
    headers = {"Authorization": f"Api-Key {raw}"}

    def call(method, path, *, expect, **case):
        if "body" in case:
            case.setdefault("media_type", "application/json")
        test_case = schema[path][method].Case(headers=headers, **case)
        response = test_case.call()
        test_case.validate_response(response, checks=CHECKS)
        assert response.status_code == expect, response.text
        return response

    return call


def test_api_contract__a_batch_from_create_to_delete(api, django_capture_on_commit_callbacks):
    items = [
        {"external_id": "a", "payload": {"text": "hello"}},
        {"external_id": "b", "payload": {"fail": True}},
    ]
    api("POST", "/api/v1/batches/", body={"type": "echo", "label": 5}, expect=400)
    created = api("POST", "/api/v1/batches/", body={"type": "echo", "items": items}, expect=201)
    batch = {"id": created.json()["id"]}
    api("POST", f"{BATCH}items/", path_parameters=batch, body=[{"payload": {"n": 3}}], expect=201)
    api("POST", f"{BATCH}pause/", path_parameters=batch, expect=409)

    with django_capture_on_commit_callbacks(execute=True):
        api("POST", f"{BATCH}commit/", path_parameters=batch, expect=200)

    ended = api("GET", BATCH, path_parameters=batch, expect=200).json()
    assert (ended["status"], ended["counts"]["failed"]) == ("finished", 1)
    api("GET", f"{BATCH}items/", path_parameters=batch, query={"status": "failed"}, expect=200)
    for index in (0, 1):
        item = {**batch, "index": index}
        api("GET", f"{BATCH}items/{{index}}/", path_parameters=item, expect=200)
    api("GET", f"{BATCH}results/", path_parameters=batch, expect=200)
    api("GET", f"{BATCH}errors/", path_parameters=batch, expect=200)
    api("GET", f"{BATCH}errors/", path_parameters=batch, query={"format": "csv"}, expect=200)
    api("GET", f"{BATCH}events/", path_parameters=batch, expect=200)
    for fmt in ("jsonl", "csv"):
        api("GET", f"{BATCH}export/", path_parameters=batch, query={"format": fmt}, expect=200)
    api("GET", f"{BATCH}package/", path_parameters=batch, expect=200)
    api("POST", f"{BATCH}commit/", path_parameters=batch, expect=409)
    with django_capture_on_commit_callbacks(execute=True):
        api("POST", f"{BATCH}rerun/", path_parameters=batch, body={"items": "all"}, expect=200)
    api("GET", "/api/v1/batches/", query={"status": "finished"}, expect=200)

    api("DELETE", BATCH, path_parameters=batch, expect=204)
    api("GET", BATCH, path_parameters=batch, expect=404)
