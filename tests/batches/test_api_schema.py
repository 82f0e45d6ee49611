"""The OpenAPI schema documents the problem documents, media types and links of the API.

The native API and each compat dialect are separate documents, each valid and free of
drf-spectacular warnings, with the operation ids generated clients are named after.
"""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
DIALECTS = ["brightlocal", "centrapay", "signing", "dlcs"]

# Every operation of the native API and its id. Generated clients name their functions
# after these ids: a change here is a breaking change for them.
OPERATION_IDS = {
    ("get", "/api/v1/"): "api_root",
    ("get", "/api/v1/job-types/"): "job_types_list",
    ("get", "/api/v1/batches/"): "batches_list",
    ("post", "/api/v1/batches/"): "batches_create",
    ("get", "/api/v1/batches/{id}/"): "batches_retrieve",
    ("patch", "/api/v1/batches/{id}/"): "batches_update",
    ("delete", "/api/v1/batches/{id}/"): "batches_delete",
    ("post", "/api/v1/batches/{id}/commit/"): "batches_commit",
    ("post", "/api/v1/batches/{id}/cancel/"): "batches_cancel",
    ("post", "/api/v1/batches/{id}/pause/"): "batches_pause",
    ("post", "/api/v1/batches/{id}/resume/"): "batches_resume",
    ("post", "/api/v1/batches/{id}/rerun/"): "batches_rerun",
    ("get", "/api/v1/batches/{id}/items/"): "batch_items_list",
    ("post", "/api/v1/batches/{id}/items/"): "batch_items_add",
    ("post", "/api/v1/batches/{id}/items/file/"): "batch_file_item_add",
    ("get", "/api/v1/batches/{id}/items/{index}/"): "batch_item_retrieve",
    ("post", "/api/v1/batches/{id}/upload/"): "batch_upload",
    ("get", "/api/v1/batches/{id}/results/"): "batch_results",
    ("get", "/api/v1/batches/{id}/export/"): "batch_export",
    ("get", "/api/v1/batches/{id}/package/"): "batch_package",
    ("get", "/api/v1/batches/{id}/errors/"): "batch_errors_list",
    ("get", "/api/v1/batches/{id}/events/"): "batch_events_list",
    ("get", "/api/v1/batches/{id}/deliveries/"): "batch_deliveries_list",
    (
        "post",
        "/api/v1/batches/{id}/deliveries/{delivery_id}/redeliver/",
    ): "batch_delivery_redeliver",
    ("get", "/api/v1/account/"): "account_retrieve",
    ("post", "/api/v1/account/webhook-secret/"): "account_webhook_secret_rotate",
}


@pytest.fixture
def schema(db) -> dict:
    response = APIClient().get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def dialect_schema(name: str) -> dict:
    response = APIClient().get(f"/compat/{name}/schema/?format=json")
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


@pytest.mark.parametrize("name", DIALECTS)
def test_schema__the_dialects_keep_their_own_error_bodies(db, name):
    checked = 0
    for method, path, operation in operations(dialect_schema(name), "/compat/"):
        for status, response in operation["responses"].items():
            assert "application/problem+json" not in response.get("content", {}), (
                f"{method} {path} {status}"
            )
        checked += 1
    assert checked


def test_schema__every_operation_has_its_pinned_id(schema):
    served = {
        (method, path): operation["operationId"]
        for method, path, operation in operations(schema, "/")
    }

    assert served == OPERATION_IDS


def test_schema__the_native_document_has_no_dialect(schema):
    assert all(path.startswith("/api/v1/") for path in schema["paths"])
    assert not any(
        name.startswith(("BrightLocal", "Centrapay", "Dlcs", "Signing"))
        for name in schema["components"]["schemas"]
    )


@pytest.mark.parametrize("name", DIALECTS)
def test_schema__each_dialect_is_a_document_of_its_own(db, name):
    document = dialect_schema(name)

    assert document["paths"]
    assert all(path.startswith(f"/compat/{name}/") for path in document["paths"])
    assert name in document["info"]["title"].lower().replace("-", "")
    assert "Problem" not in document["components"].get("schemas", {})


@pytest.mark.parametrize(
    ("generator", "prefix"),
    [
        (None, "/api/v1/"),
        *(
            (f"batches.compat.schema.{name.title()}SchemaGenerator", f"/compat/{name}/")
            for name in DIALECTS
        ),
    ],
)
def test_schema__spectacular_writes_each_document_valid_and_without_warnings(
    db, tmp_path, generator, prefix
):
    out = tmp_path / "schema.json"
    options = {"generator_class": generator} if generator else {}

    call_command(
        "spectacular",
        validate=True,
        fail_on_warn=True,
        format="openapi-json",
        file=str(out),
        **options,
    )

    paths = json.loads(out.read_text())["paths"]
    assert paths
    assert all(path.startswith(prefix) for path in paths)


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


def test_schema__a_job_type_is_a_string_that_names_the_registered_types(schema, client_a):
    registered = {job_type["name"] for job_type in client_a.get("/api/v1/job-types/").json()}
    job_type = schema["components"]["schemas"]["JobTypeName"]

    # Not an enum: a client generated once can send a type registered later.
    assert job_type["type"] == "string"
    assert "enum" not in job_type
    assert all(f"`{name}`" in job_type["description"] for name in registered)
    assert job_type["example"] == "echo"


def test_schema__adding_items_as_json_and_a_file_item_are_separate_operations(schema):
    items = schema["paths"]["/api/v1/batches/{id}/items/"]["post"]["requestBody"]["content"]
    file_item = schema["paths"]["/api/v1/batches/{id}/items/file/"]["post"]["requestBody"]

    assert set(items) == {"application/json"}
    body = schema["components"]["schemas"]["ItemsAddRequest"]
    one = {"$ref": "#/components/schemas/ItemInputRequest"}
    assert body == {"oneOf": [one, {"type": "array", "items": one}]}
    assert set(file_item["content"]) == {"multipart/form-data"}
    form = file_item["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "file" in schema["components"]["schemas"][form]["required"]


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
