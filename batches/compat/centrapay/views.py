"""Centrapay's batch API, translated onto batchsite's services.

A client written for Centrapay works unchanged against `/compat/centrapay/api/...`:

- `POST /api/batches` `{"type", "url", "accountId"}` creates a batch from the file at
  `url` (read by a worker, then committed and processed) and answers 200 with the batch:
  `{"id", "status": "created", "type", "count": "0", "errorCount": "0", "errors": []}`.
  `id` is the batch's UUID; BigNumbers (`count`, `errorCount`, an error's `index`) are
  strings, as Centrapay documents them. The file is JSON Lines, a JSON array of items,
  CSV or ZIP: by its Content-Type, else its URL's extension, else its first bytes.
- `GET /api/batches/{id}` returns the same shape as the batch goes through
  created -> copied -> chunked -> complete, or error when its file cannot be read.
  `count` is the number of items read from the file; `errors` lists the lines that could
  not become items (`index`, and `externalId` when the line named one) and batch-level
  failures (`message` only), in the order found, then the items that failed when they
  ran (`index` is the item's line in the file, `externalId` when it has one, `message`),
  by index: at most 1000 in all. `errorCount` counts every one of them.
- `GET /api/batch-types` lists the registered job types as `{"name", "description"}`.

The key is the `X-Api-Key` header. `accountId` is the key's account, by its number (as a
string) or its name; naming any other account, or one that does not exist, is the same
403, so a key cannot learn which other accounts exist.

Centrapay documents no error schema, so every failure here is `{"message": "..."}` with
the HTTP status: 400 bad body (each refused field as `field: reason`, joined by "; "),
401 missing or invalid key, 403 another account, 404 unknown batch (another account's
batch included), 405 wrong method, and the services' own statuses (e.g. 409) otherwise;
a crash is a 500 whose message says nothing of it. Never a problem document.
"""

from __future__ import annotations

import uuid

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from batches import services
from batches.api.authentication import KeyAuthentication, request_actor
from batches.api.notfound import CatchAllNotFound
from batches.api.parsers import DepthLimitedJSONParser
from batches.api.problems import ServerError, flatten_errors
from batches.api.schema import api_key_scheme
from batches.compat.centrapay.serializers import (
    CentrapayBatchCreateSerializer,
    CentrapayBatchSerializer,
    CentrapayBatchTypeSerializer,
    CentrapayErrorSerializer,
)
from batches.compat.errors import dialect_exception_handler
from batches.exceptions import DomainError, InvalidInput
from batches.models import Batch
from jobs import job_types

TAG = "compat: centrapay"
KEY_HEADER = "X-Api-Key"
# batchsite's field names -> the names a Centrapay client sent.
FIELD_NAMES = {"source_url": "url"}


class CentrapayError(Exception):
    """A refusal in Centrapay's words: an HTTP status and a message."""

    def __init__(self, message: str, *, status_code: int = 400):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def _joined(errors: list[dict]) -> str:
    return "; ".join(
        f"{FIELD_NAMES.get(error['field'], error['field'])}: {error['message']}" for error in errors
    )


def _error_body(exc: Exception) -> tuple[int, dict[str, str]]:
    """Answer every error as `{"message": ...}`, a crash as a bare 500."""
    status_code, message = _message(exc)
    return status_code, {"message": message}


def _message(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, CentrapayError):
        return exc.status_code, exc.message
    if isinstance(exc, Http404):
        return 404, "Not found"
    if isinstance(exc, InvalidInput):
        fields = [error for error in exc.errors if "field" in error]
        return 400, _joined(fields) if fields else exc.message
    if isinstance(exc, DomainError):
        return exc.status_code, exc.message
    if isinstance(exc, exceptions.NotAuthenticated):
        return 401, f"An API key is required in the {KEY_HEADER} header"
    if isinstance(exc, exceptions.ValidationError):
        return 400, _joined(flatten_errors(exc.detail))
    if not isinstance(exc, exceptions.APIException):
        exc = ServerError()  # whatever else answerable let through is a crash too
    return exc.status_code, str(exc.detail)


centrapay_exception_handler = dialect_exception_handler(_error_body, known=(CentrapayError,))


class CentrapayKeyAuthentication(KeyAuthentication):
    """Take the key from the `X-Api-Key` header, as Centrapay does."""

    challenge = KEY_HEADER

    def raw_key(self, request) -> str | None:
        """Return the `X-Api-Key` header."""
        return request.headers.get(KEY_HEADER, "").strip()


CentrapayKeyScheme = api_key_scheme(
    "batches.compat.centrapay.views.CentrapayKeyAuthentication",
    name="CentrapayApiKey",
    location="header",
    parameter=KEY_HEADER,
    description="A batchsite API key.",
)


class CentrapayView(APIView):
    """A Centrapay endpoint: its own key header, JSON only, its own error shape."""

    authentication_classes = [CentrapayKeyAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]
    parser_classes = [DepthLimitedJSONParser]

    def get_exception_handler(self):
        """Answer errors in Centrapay's shape, not as problem documents."""
        return centrapay_exception_handler

    def actor(self) -> str:
        """Name the caller in the batch's timeline."""
        return f"{request_actor(self.request)} (centrapay)"


FAILURES = {
    400: OpenApiResponse(CentrapayErrorSerializer, description="The body is refused."),
    401: OpenApiResponse(CentrapayErrorSerializer, description="Missing or invalid API key."),
}


class BatchCreateView(CentrapayView):
    """`/api/batches`: create a batch from a file URL."""

    @extend_schema(
        tags=[TAG],
        operation_id="centrapay_batch_create",
        request=CentrapayBatchCreateSerializer,
        responses={
            200: CentrapayBatchSerializer,
            **FAILURES,
            403: OpenApiResponse(
                CentrapayErrorSerializer, description="accountId is another account."
            ),
            409: OpenApiResponse(
                CentrapayErrorSerializer,
                description="The batch type cannot run on this server yet; `message` says why.",
            ),
        },
    )
    def post(self, request):
        """Initialize loading of items from a batch file."""
        body = CentrapayBatchCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        account = request.user.account
        if body.validated_data["accountId"] not in (str(account.number), account.name):
            raise CentrapayError(
                "accountId names an account this API key cannot act for", status_code=403
            )
        batch, _ = services.batch_create(
            account=account,
            actor=self.actor(),
            type=body.validated_data["type"],
            source_url=body.validated_data["url"],
            commit=True,
        )
        return Response(CentrapayBatchSerializer(batch).data)


class BatchDetailView(CentrapayView):
    """`/api/batches/{id}`: a batch's progress."""

    @extend_schema(
        tags=[TAG],
        operation_id="centrapay_batch_retrieve",
        responses={
            200: CentrapayBatchSerializer,
            401: FAILURES[401],
            404: OpenApiResponse(CentrapayErrorSerializer, description="No such batch."),
        },
    )
    def get(self, request, id: str):
        """Return the batch's status, count and errors."""
        try:
            pk = uuid.UUID(id)
        except ValueError:
            pk = None
        batches = Batch.objects.for_account(request.user.account)
        batch = batches.filter(pk=pk).first() if pk is not None else None
        if batch is None:
            raise CentrapayError("Batch not found", status_code=404)
        return Response(CentrapayBatchSerializer(batch).data)


class BatchTypeListView(CentrapayView):
    """`/api/batch-types`: the types a batch can have."""

    @extend_schema(
        tags=[TAG],
        operation_id="centrapay_batch_types",
        responses={200: CentrapayBatchTypeSerializer(many=True), 401: FAILURES[401]},
    )
    def get(self, request):
        """List every registered batch type."""
        types = sorted(job_types().values(), key=lambda job_type: job_type.name)
        return Response(CentrapayBatchTypeSerializer(types, many=True).data)


class NotFoundView(CatchAllNotFound, CentrapayView):
    """Answer any other path under the dialect in Centrapay's shape."""

    def not_found(self, request) -> Exception:
        """Say so in Centrapay's words."""
        return CentrapayError(f"No API resource at {request.path}", status_code=404)
