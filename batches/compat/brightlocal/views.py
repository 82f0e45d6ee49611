"""BrightLocal's batch API (v4), translated onto batchsite's services.

A client written for BrightLocal works unchanged against
`/compat/brightlocal/seo-tools/api/v4/batch`:

- `POST batch` (stop-on-job-error 1|0) creates a batch and answers 201 with its `batch-id`:
  the batch's integer `number`, as a string.
- `POST batch/jobs` (batch-id, job-type, and the job's own parameters as form fields or
  JSON, one job per call) adds one item; every field but api-key, batch-id and job-type
  is the item's payload (form values are strings, JSON keeps its types). Its `job-id`
  is the item's primary key, unique across batches.
- `PUT batch` commits, `GET batch` returns the results so far, grouped by job type, with
  a histogram of job states, `DELETE batch` deletes.

The key is the `api-key` query or form parameter (or a field of a JSON body). Other
parameters may be sent in the query or the body; the body wins.

Every failure is `{"success": false, "errors": {KEY: message}}` with the HTTP status, never
a problem document: the documented keys INVALID_JOBS_COUNT, BATCH_ALREADY_COMMITTED and
INVALID_BATCH_ID (404, also for another account's batch), plus INVALID_API_KEY (401),
INVALID_JOB_TYPE (400) and METHOD_NOT_ALLOWED (405). Bad parameters are reported under
the parameter's name, e.g. `{"fail": "must be true or false"}`. Any other refusal of the
services is a 400 (409 conflicts included, as BrightLocal answers 400 to its own
conflicts) under the upper-cased batchsite code, e.g. BATCH_NOT_OPEN or JSON_TOO_DEEP. A
crash is a 500 under SERVER_ERROR that says nothing of it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from batches import services
from batches.api.authentication import KeyAuthentication, request_actor, request_key_account
from batches.api.notfound import CatchAllNotFound
from batches.api.parsers import DepthLimitedJSONParser
from batches.api.problems import ServerError, flatten_errors
from batches.api.schema import api_key_scheme
from batches.compat.brightlocal.serializers import (
    BATCH_STATUSES,
    BrightLocalBatchCreatedSerializer,
    BrightLocalBatchCreateParams,
    BrightLocalBatchParams,
    BrightLocalBatchResultsSerializer,
    BrightLocalFailureSerializer,
    BrightLocalJobAddedSerializer,
    BrightLocalJobAddParams,
    BrightLocalJobResultSerializer,
    BrightLocalSuccessSerializer,
)
from batches.compat.errors import dialect_exception_handler
from batches.exceptions import (
    BatchAlreadyCommitted,
    BatchEmpty,
    BatchNotOpen,
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
)
from batches.models import Batch, Item
from jobs import get_job_type

TAG = "compat: brightlocal"
KEY_PARAMETER = "api-key"
# Parameters of the call itself; everything else sent to `POST batch/jobs` is the job's.
CALL_PARAMETERS = frozenset({KEY_PARAMETER, "batch-id", "job-type"})

BATCH_NOT_FOUND = {"INVALID_BATCH_ID": "Batch ID not found"}
ALREADY_COMMITTED = {"BATCH_ALREADY_COMMITTED": "This batch has been committed already"}
NO_JOBS = {"INVALID_JOBS_COUNT": "Batch can't be committed with no jobs"}


class BrightLocalError(Exception):
    """A refusal in BrightLocal's words: an HTTP status and an object of error keys."""

    def __init__(self, errors: dict[str, Any], *, status_code: int = 400):
        super().__init__("; ".join(f"{key}: {value}" for key, value in errors.items()))
        self.errors = errors
        self.status_code = status_code


def _flat(data: Any) -> dict[str, Any]:
    """Return form or query fields as a dict: one value as itself, a repeated one as a list."""
    if hasattr(data, "lists"):
        return {key: values[0] if len(values) == 1 else values for key, values in data.lists()}
    return dict(data) if isinstance(data, dict) else {}


def _field_errors(exc: InvalidInput) -> dict[str, str]:
    """Name each refused field of an item by the parameter the client sent."""
    found: dict[str, str] = {}
    for error in exc.errors:
        field = error.get("field", "INVALID_REQUEST").removeprefix("payload.")
        found.setdefault(field, error.get("message", ""))
    return found or {"INVALID_REQUEST": exc.message}


def _error_body(exc: Exception) -> tuple[int, dict[str, Any]]:
    """Answer every error as `{"success": false, "errors": {...}}`, a crash as SERVER_ERROR."""
    status_code, errors = _errors(exc)
    return status_code, {"success": False, "errors": errors}


def _errors(exc: Exception) -> tuple[int, dict[str, Any]]:  # noqa: C901 - one flat dispatch
    if isinstance(exc, BrightLocalError):
        return exc.status_code, exc.errors
    if isinstance(exc, BatchEmpty):
        return 400, NO_JOBS
    if isinstance(exc, BatchAlreadyCommitted):
        return 400, ALREADY_COMMITTED
    if isinstance(exc, NotFound | Http404):
        return 404, BATCH_NOT_FOUND
    if isinstance(exc, InvalidInput):
        return 400, _field_errors(exc)
    if isinstance(exc, DomainError):
        # BrightLocal answers its own conflicts (commit errors) with 400.
        status_code = 400 if isinstance(exc, Conflict) else exc.status_code
        return status_code, {exc.code.upper(): exc.message}
    if isinstance(exc, exceptions.NotAuthenticated):
        message = f"An API key is required: send it as the {KEY_PARAMETER} parameter"
        return 401, {"INVALID_API_KEY": message}
    if isinstance(exc, exceptions.AuthenticationFailed):
        return 401, {"INVALID_API_KEY": str(exc.detail)}
    if isinstance(exc, exceptions.ValidationError):
        errors: dict[str, str] = {}
        for error in flatten_errors(exc.detail):
            errors.setdefault(error["field"], error["message"])
        return 400, errors
    if isinstance(exc, exceptions.MethodNotAllowed):
        return 405, {"METHOD_NOT_ALLOWED": str(exc.detail)}
    if not isinstance(exc, exceptions.APIException):
        exc = ServerError()  # whatever else answerable let through is a crash too
    return exc.status_code, {str(exc.default_code).upper(): str(exc.detail)}


brightlocal_exception_handler = dialect_exception_handler(_error_body, known=(BrightLocalError,))


class BrightLocalKeyAuthentication(KeyAuthentication):
    """Take the key from the `api-key` query or form parameter, as BrightLocal does."""

    challenge = KEY_PARAMETER

    def raw_key(self, request) -> str | None:
        """Return the `api-key` parameter: the query's, else (but for GET) the body's."""
        raw = request.query_params.get(KEY_PARAMETER)
        if not raw and request.method != "GET":
            data = request.data
            raw = data.get(KEY_PARAMETER) if isinstance(data, dict) else None
        if raw and not isinstance(raw, str):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        return raw


BrightLocalKeyScheme = api_key_scheme(
    "batches.compat.brightlocal.views.BrightLocalKeyAuthentication",
    name="BrightLocalApiKey",
    location="query",
    parameter=KEY_PARAMETER,
    description="A batchsite API key, as the `api-key` query or form parameter.",
)


class BrightLocalView(APIView):
    """A BrightLocal endpoint: its own key parameter, JSON only, its own error shape."""

    authentication_classes = [BrightLocalKeyAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]
    parser_classes = [DepthLimitedJSONParser, FormParser, MultiPartParser]

    def get_exception_handler(self):
        """Answer errors in BrightLocal's shape, not as problem documents."""
        return brightlocal_exception_handler

    def params(self) -> dict[str, Any]:
        """Return the query and body parameters in one dict; the body wins."""
        if self.request.FILES:
            message = "files are not accepted; send the parameters as form fields or JSON"
            raise BrightLocalError({"INVALID_REQUEST": message})
        data = self.request.data
        if not isinstance(data, dict):
            raise BrightLocalError({"INVALID_REQUEST": "the body must be a JSON object"})
        return {**_flat(self.request.query_params), **_flat(data)}

    def batch_get(
        self, params: dict[str, Any], serializer=BrightLocalBatchParams
    ) -> tuple[Batch, dict]:
        """Return the caller's batch named by `batch-id` (404 for any other) and the params."""
        fields = serializer(data=params)
        fields.is_valid(raise_exception=True)
        account = request_key_account(self.request)
        batch = (
            Batch.objects.for_account(account)
            .filter(number=fields.validated_data["batch-id"])
            .first()
        )
        if batch is None:
            raise BrightLocalError(BATCH_NOT_FOUND, status_code=404)
        return batch, fields.validated_data

    def actor(self) -> str:
        """Name the caller in the batch's timeline."""
        return f"{request_actor(self.request)} (brightlocal)"


BATCH_ID = OpenApiParameter(
    "batch-id", int, required=True, description="Also accepted as a form field."
)
FAILURES = {
    400: OpenApiResponse(BrightLocalFailureSerializer, description="Refused; `errors` says why."),
    401: OpenApiResponse(BrightLocalFailureSerializer, description="INVALID_API_KEY"),
    404: OpenApiResponse(BrightLocalFailureSerializer, description="INVALID_BATCH_ID"),
}


class BatchView(BrightLocalView):
    """`/seo-tools/api/v4/batch`: create, commit, poll and delete a batch."""

    @extend_schema(
        tags=[TAG],
        operation_id="brightlocal_batch_create",
        request={
            "application/x-www-form-urlencoded": BrightLocalBatchCreateParams,
            "application/json": BrightLocalBatchCreateParams,
        },
        parameters=[OpenApiParameter("stop-on-job-error", str, enum=["0", "1"])],
        responses={201: BrightLocalBatchCreatedSerializer, **FAILURES},
    )
    def post(self, request):
        """Create a batch; jobs can be added until it is committed."""
        fields = BrightLocalBatchCreateParams(data=self.params())
        fields.is_valid(raise_exception=True)
        stop = fields.validated_data["stop-on-job-error"] == "1"
        batch, _ = services.batch_create(
            account=request_key_account(request),
            actor=self.actor(),
            options={"stop_on_error": True} if stop else None,
        )
        return Response(
            {"success": True, "batch-id": str(batch.number)}, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        tags=[TAG],
        operation_id="brightlocal_batch_commit",
        request=None,
        parameters=[BATCH_ID],
        responses={200: BrightLocalSuccessSerializer, **FAILURES},
    )
    def put(self, request):
        """Commit the batch: no more jobs; processing starts."""
        batch, _ = self.batch_get(self.params())
        services.batch_commit(batch=batch, actor=self.actor())
        return Response({"success": True})

    @extend_schema(
        tags=[TAG],
        operation_id="brightlocal_batch_results",
        parameters=[BATCH_ID],
        responses={200: BrightLocalBatchResultsSerializer, **FAILURES},
    )
    def get(self, request):
        """Return the batch's state and every job so far, grouped by job type."""
        batch, _ = self.batch_get(self.params())
        # The batch is read before its jobs: once it says Finished, every job listed has ended.
        items = batch.items.order_by("index").only("pk", "type", "status", "result")
        results: dict[str, list] = {}
        statuses: dict[str, int] = {}
        for item in items.iterator(chunk_size=2000):
            job = BrightLocalJobResultSerializer(item, context={"batch": batch}).data
            results.setdefault(item.type, []).append(job)
            statuses[job["status"]] = statuses.get(job["status"], 0) + 1
        return Response(
            {
                "success": True,
                "status": BATCH_STATUSES[batch.status],
                "results": results,
                "statuses": statuses,
            }
        )

    @extend_schema(
        tags=[TAG],
        operation_id="brightlocal_batch_delete",
        parameters=[BATCH_ID],
        responses={200: BrightLocalSuccessSerializer, **FAILURES},
    )
    def delete(self, request):
        """Delete the batch and every job's data."""
        batch, _ = self.batch_get(self.params())
        services.batch_delete(batch=batch, actor=self.actor())
        return Response({"success": True})


class JobAddView(BrightLocalView):
    """`/seo-tools/api/v4/batch/jobs`: add one job to an uncommitted batch."""

    @extend_schema(
        tags=[TAG],
        operation_id="brightlocal_job_add",
        request={
            "application/x-www-form-urlencoded": BrightLocalJobAddParams,
            "application/json": BrightLocalJobAddParams,
        },
        description=(
            "Every field besides api-key, batch-id and job-type is a parameter of the job "
            "and becomes its payload."
        ),
        responses={200: BrightLocalJobAddedSerializer, **FAILURES},
    )
    def post(self, request):
        """Add one job; its parameters are every field but api-key, batch-id and job-type."""
        params = self.params()
        batch, fields = self.batch_get(params, serializer=BrightLocalJobAddParams)
        job_type = fields["job-type"]
        if get_job_type(job_type) is None:
            raise BrightLocalError({"INVALID_JOB_TYPE": f"Job type '{job_type}' is not supported"})
        payload = {key: value for key, value in params.items() if key not in CALL_PARAMETERS}
        with transaction.atomic():
            try:
                added = services.items_add(
                    batch=batch, items=[{"type": job_type, "payload": payload}], actor=self.actor()
                )
            except BatchNotOpen as exc:
                if Batch.objects.filter(pk=batch.pk, committed_at__isnull=False).exists():
                    raise BrightLocalError(ALREADY_COMMITTED) from exc
                raise
            job_id = Item.objects.values_list("pk", flat=True).get(batch=batch, index=added[0])
        return Response({"success": True, "job-id": job_id})


class NotFoundView(CatchAllNotFound, BrightLocalView):
    """Answer any other path under the dialect in BrightLocal's shape."""

    def not_found(self, request) -> Exception:
        """Say so in BrightLocal's words."""
        return BrightLocalError({"NOT_FOUND": f"No API method at {request.path}"}, status_code=404)
