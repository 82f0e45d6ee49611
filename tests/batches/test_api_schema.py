"""The OpenAPI schema documents the problem documents, media types and links of the API."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


@pytest.fixture
def schema(db) -> dict:
    response = APIClient().get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict, prefix: str):
    """Yield (method, path, operation) for every operation under `prefix`."""
    for path, methods in schema["paths"].items():
        if path.startswith(prefix):
            for method, operation in methods.items():
                yield method, path, operation


def test_schema__every_api_operation_documents_the_problems_it_may_answer(schema):
    checked = 0
    for method, path, operation in operations(schema, "/api/v1/"):
        located = {parameter["in"] for parameter in operation.get("parameters", [])}
        body = "requestBody" in operation
        expected = {"401", "429"}
        if "path" in located:
            expected.add("404")
        if "query" in located or body:
            expected.add("400")
        if body:
            expected |= {"413", "415"}
        for status in expected:
            response = operation["responses"].get(status)
            assert response is not None, f"{method} {path} does not document {status}"
            assert response["content"] == PROBLEM, f"{method} {path} {status}"
        checked += 1
    assert checked >= 20


def test_schema__a_state_change_documents_its_conflicts(schema):
    for method, path, operation in operations(schema, "/api/v1/batches/"):
        if method in ("post", "put", "patch"):
            assert operation["responses"]["409"]["content"] == PROBLEM, f"{method} {path}"
    package = schema["paths"]["/api/v1/batches/{id}/package/"]["get"]
    assert package["responses"]["409"]["content"] == PROBLEM


def test_schema__the_dialects_keep_their_own_error_bodies(schema):
    for method, path, operation in operations(schema, "/compat/"):
        for status, response in operation["responses"].items():
            assert "application/problem+json" not in response.get("content", {}), (
                f"{method} {path} {status}"
            )


def test_schema__downloads_document_their_media_types(schema):
    paths = schema["paths"]

    def media_types(path):
        return set(paths[path]["get"]["responses"]["200"]["content"])

    assert media_types("/api/v1/batches/{id}/export/") == {"application/x-ndjson", "text/csv"}
    assert media_types("/api/v1/batches/{id}/errors/") == {"application/json", "text/csv"}
    assert media_types("/api/v1/batches/{id}/package/") == {"application/zip"}


def test_schema__lists_inside_a_batch_document_their_cursor(schema):
    for path in ("items", "errors", "events"):
        operation = schema["paths"][f"/api/v1/batches/{{id}}/{path}/"]["get"]
        names = {parameter["name"] for parameter in operation["parameters"]}
        assert "cursor" in names, path
        assert "page" not in names, path
        page = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert "count" not in schema["components"]["schemas"][page.rsplit("/", 1)[1]]["properties"]


def test_schema__strict_bodies_refuse_unknown_fields(schema):
    components = schema["components"]["schemas"]

    for name in ("BatchCreateRequest", "BatchOptionsRequest", "ItemInputRequest", "RerunRequest"):
        assert components[name]["additionalProperties"] is False, name


def test_schema__job_type_fields_list_the_registered_types(schema, client_a):
    registered = {job_type["name"] for job_type in client_a.get("/api/v1/job-types/").json()}

    assert set(schema["components"]["schemas"]["JobTypeName"]["enum"]) == registered
    assert "echo" in registered


def test_schema__a_created_batch_links_to_every_operation_on_it(schema):
    links = schema["paths"]["/api/v1/batches/"]["post"]["responses"]["201"]["links"]
    targets = {
        operation["operationId"]
        for _, path, operation in operations(schema, "/api/v1/batches/{id}/")
        if path.count("{") == 1
    }

    assert targets <= set(links)
    for target in targets:
        assert links[target]["parameters"] == {"path.id": "$response.body#/id"}, target


def test_schema__batch_detail_documents_counts_by_type_as_counts_per_type(schema):
    detail = schema["components"]["schemas"]["BatchDetail"]
    counts_by_type = detail["properties"]["counts_by_type"]

    assert "counts_by_type" in detail["required"]
    assert counts_by_type["type"] == "object"
    assert counts_by_type["additionalProperties"] == {"$ref": "#/components/schemas/Counts"}
    assert "counts_by_type" not in schema["components"]["schemas"]["Batch"]["properties"]
