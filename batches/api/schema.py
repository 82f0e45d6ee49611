"""OpenAPI descriptions drf-spectacular cannot infer on its own."""

from __future__ import annotations

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from batches.api.problems import PROBLEM_CONTENT_TYPE, problem_exception_handler
from jobs import job_types

# What each problem status means, for the schema's response descriptions.
PROBLEM_STATUSES = {
    400: "`invalid`: a parameter or the body is refused; `errors` says where.",
    401: "`not_authenticated`: no API key, or one that is unknown, revoked or expired.",
    404: "`not_found`: no such batch or item (another account's batch too), or no such page.",
    409: "The batch's state does not allow this: `code` says why "
    "(e.g. `batch_not_open`, `batch_finished`, `batch_exists`), or `job_type_not_ready`: "
    "items of a job type that cannot run on this server yet (`detail` says what it needs).",
    413: "`too_large`: the body, or a file in it, is over the limit.",
    415: "`unsupported_media_type`: the body's Content-Type is not one this operation reads.",
    429: "`throttled`: too many requests for this key, or too many invalid keys from this "
    "client address; `Retry-After` says when to try again.",
}
BODY_METHODS = {"POST", "PUT", "PATCH"}
BATCHES_PATH = "/api/v1/batches/"


def api_key_scheme(
    target_class: str, *, name: str, location: str, parameter: str, description: str
) -> type[OpenApiAuthenticationExtension]:
    """Describe in the schema an authentication class that reads an API key from one parameter.

    `location` is OpenAPI's `in` ("header", "query"); `parameter` the header or parameter
    name. drf-spectacular registers the extension class as it is created.
    """
    definition = {"type": "apiKey", "in": location, "name": parameter, "description": description}

    def get_security_definition(
        self: OpenApiAuthenticationExtension, auto_schema: AutoSchema
    ) -> dict:
        return dict(definition)

    return type(
        f"{name}Scheme",
        (OpenApiAuthenticationExtension,),
        {
            "__doc__": f"Describe {target_class} in the schema.",
            "__module__": __name__,
            "target_class": target_class,
            "name": name,
            "get_security_definition": get_security_definition,
        },
    )


ApiKeyAuthenticationScheme = api_key_scheme(
    "batches.api.authentication.ApiKeyAuthentication",
    name="ApiKeyAuth",
    location="header",
    parameter="Authorization",
    description="`Api-Key <key>`; create a key with `manage.py createapikey ACCOUNT`.",
)


class StrictSerializerScheme(OpenApiSerializerExtension):
    """Say in the schema what a StrictSerializer does: a request with an unknown field is 400."""

    target_class = "batches.api.fields.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        """Map the serializer as usual, closed to other properties in requests."""
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


class JobTypeNameScheme(OpenApiSerializerFieldExtension):
    """List the registered job types as the values a job type field takes."""

    target_class = "batches.api.fields.JobTypeNameField"

    def map_serializer_field(self, auto_schema, direction):
        """Refer to one component: the job types registered when the schema is made."""
        component = ResolvedComponent(
            name="JobTypeName",
            type=ResolvedComponent.SCHEMA,
            object="JobTypeName",
            schema={
                "type": "string",
                "enum": sorted(job_types()),
                "description": "A registered job type (`GET job-types/`).",
            },
        )
        auto_schema.registry.register_on_missing(component)
        return component.ref


class ProblemErrorSerializer(serializers.Serializer):
    """One thing wrong with a request: a field, or the item at an index."""

    field = serializers.CharField(required=False, help_text="e.g. `options.deadline`, `body`.")
    index = serializers.IntegerField(required=False, help_text="The refused item's position.")
    external_id = serializers.CharField(required=False)
    code = serializers.CharField(required=False)
    message = serializers.CharField()
    # A wire field named like a Serializer property: DRF's metaclass moves declared fields
    # off the class, so the property stays; mypy sees an override.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.CharField(), required=False, help_text="An item's errors by field."
    )


class ProblemSerializer(serializers.Serializer):
    """An RFC 9457 problem document: the body of every error of this API."""

    type = serializers.CharField(help_text="`urn:batchsite:problem:<code>`.")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField(help_text="Machine-readable: `invalid`, `not_found`, ...")
    instance = serializers.CharField(
        help_text="This occurrence: `urn:uuid:<request_id>`, or, for a request id that is "
        "not a UUID, the request's path with `?request_id=<request_id>`."
    )
    request_id = serializers.CharField(
        help_text="The request's id, as sent back in `X-Request-ID`: the client's, if it "
        "sent a sane one, else one the server made."
    )
    # A wire field named like a Serializer property: DRF's metaclass moves declared fields
    # off the class, so the property stays; mypy sees an override.
    errors = ProblemErrorSerializer(many=True, required=False)  # type: ignore[assignment]
    job_types = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="With `job_type_not_ready`: the job types that cannot run here yet.",
    )


def problem_response(status_code: int, description: str) -> dict:
    """Return an `extend_schema(responses=...)` entry: a problem document the rules below miss."""
    response = OpenApiResponse(ProblemSerializer, description=description)
    return {(status_code, PROBLEM_CONTENT_TYPE): response}


class ProblemAutoSchema(AutoSchema):
    """Document, for every operation that answers errors as problem documents, which it may.

    The statuses follow from the operation itself, so no view repeats them: 400 when it
    reads query parameters or a body, 401 when it needs a key, 404 when its path names
    something (or its list is paged), 409 when it may change a batch (a POST, PUT or
    PATCH under batches/), 413 and 415 when it reads a body, 429 when it is throttled. A
    view's own description of a status wins (`problem_response` adds one these rules
    miss). Views with another error shape (the compat dialects) document their own.
    """

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        """Return the operation with its problem responses added."""
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None or self.view.get_exception_handler() is not problem_exception_handler:
            return operation
        responses = operation["responses"]
        for status_code in self.problem_statuses(operation):
            responses.setdefault(
                str(status_code),
                self._get_response_for_code(
                    OpenApiResponse(ProblemSerializer, description=PROBLEM_STATUSES[status_code]),
                    str(status_code),
                    media_types=[PROBLEM_CONTENT_TYPE],
                ),
            )
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def problem_statuses(self, operation: dict) -> list[int]:
        """Return the problem statuses this operation may answer."""
        located = {parameter.get("in") for parameter in operation.get("parameters", [])}
        names = {parameter.get("name") for parameter in operation.get("parameters", [])}
        body = "requestBody" in operation
        statuses = []
        if "query" in located or body:
            statuses.append(400)
        if any(requirement for requirement in operation.get("security", [])):
            statuses.append(401)
        if "path" in located or "page" in names:
            statuses.append(404)
        if self.method in BODY_METHODS and self.path.startswith(BATCHES_PATH):
            statuses.append(409)
        if body:
            statuses.extend([413, 415])
        if self.view.throttle_classes:
            statuses.append(429)
        return statuses


# Where one operation's answer names what others act on, as OpenAPI links: clients (and
# schemathesis, which follows them) see that a created batch is what every batch operation
# takes. Each row: the source operation, the path prefix of its targets, and where the
# targets' parameters come from.
LINKS = [
    (("post", "/api/v1/batches/"), "/api/v1/batches/{id}/", {"id": "$response.body#/id"}),
    (
        ("post", "/api/v1/batches/{id}/items/"),
        "/api/v1/batches/{id}/",
        {"id": "$request.path.id", "index": "$response.body#/first_index"},
    ),
    (
        ("post", "/api/v1/batches/"),
        "/compat/dlcs/customers/{customer}/queue",
        {"customer": "$response.body#/account"},
    ),
    (
        ("post", "/compat/signing/api/CreateBatch/{processId}"),
        "/compat/signing/api/",
        {"batchId": "$response.body#/id"},
    ),
    (
        ("post", "/compat/brightlocal/seo-tools/api/v4/batch"),
        "/compat/brightlocal/seo-tools/api/v4/batch",
        {"batch-id": "$response.body#/batch-id"},
    ),
]


def add_links(result, generator, request, public):
    """Add the LINKS to the success responses of their source operations.

    A target gets a link only when the row supplies every path parameter it requires.
    """
    paths = result.get("paths", {})
    for (method, source_path), prefix, values in LINKS:
        source = paths.get(source_path, {}).get(method)
        if source is None:
            continue
        links = {}
        for path, operations in paths.items():
            if not path.startswith(prefix):
                continue
            for target in operations.values():
                supplied = {
                    f"{parameter['in']}.{parameter['name']}": values[parameter["name"]]
                    for parameter in target.get("parameters", [])
                    if parameter["name"] in values
                }
                required = {
                    parameter["name"]
                    for parameter in target.get("parameters", [])
                    if parameter["in"] == "path"
                }
                if supplied and required <= set(values) and target is not source:
                    links[target["operationId"]] = {
                        "operationId": target["operationId"],
                        "parameters": supplied,
                    }
        for status_code, response in source["responses"].items():
            if status_code.startswith("2") and links:
                response.setdefault("links", {}).update(links)
    return result
