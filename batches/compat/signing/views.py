"""The signing dialect's endpoints: thin views that find the batch, call a service, translate.

What differs from the source API, and why:

- Authentication: the source API documents none; batchsite needs a tenant, so every
  request carries `Authorization: Api-Key <key>` (401 without a usable key).
- Error bodies: the source API documents statuses without bodies; errors here answer
  `{"error": "<what is wrong>"}` with the documented status (400, 404) or, for cases it
  does not document, the status batchsite uses (401, 409 for a batch in the wrong
  state, 413 for a package over the size limit).
- Ids: a batch's id is its integer `number`. CreateBatch sends it as a string and the
  other records as an integer, as the source API's examples do. A document's id is its
  item's primary key, as a string; an uploaded package's id is its upload's entry in the
  batch timeline.
- `providerSettingsId` is always "1" (one signer); `creationDate` is in UTC.
- A non-integer batchId names no batch: 404.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import IO

from django.core.exceptions import SuspiciousOperation
from django.http import Http404, StreamingHttpResponse
from django.utils.http import parse_header_parameters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from batches import exports, services
from batches.api.authentication import ApiKeyAuthentication, request_account, request_actor
from batches.api.parsers import RawBodyParser
from batches.api.problems import domain_error_line, flatten_errors, request_refusal
from batches.api.views import CatchAllNotFound
from batches.compat.signing.serializers import (
    DELETED,
    SigningAcceptedBatchSerializer,
    SigningBatchIdSerializer,
    SigningBatchRecordSerializer,
    SigningBatchStatusSerializer,
    SigningErrorSerializer,
    SigningPackageRecordSerializer,
    SigningProcessIdSerializer,
    flag,
)
from batches.exceptions import DomainError, NotFound
from batches.models import Batch

JOB_TYPE = "document.sign"
ZIP = "application/zip"
DEFAULT_PACKAGE_NAME = "package.zip"
TAG = "compat: signing"
# Every endpoint may answer these.
ERRORS = {401: SigningErrorSerializer, 404: SigningErrorSerializer}
BATCH_ID = OpenApiParameter("batchId", int, OpenApiParameter.PATH)
# Batch numbers are 64-bit; a longer string of digits names no batch.
MAX_ID_DIGITS = 18


def error_message(exc: Exception) -> str:
    """Say in one line what is wrong, with the first details a domain error carries."""
    if isinstance(exc, exceptions.ValidationError):
        return "; ".join(error["message"] for error in flatten_errors(exc.detail)[:5])
    if isinstance(exc, exceptions.APIException):
        return str(exc.detail)
    return domain_error_line(exc)


def signing_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Answer every error with `{"error": "..."}`, never a problem document."""
    if isinstance(exc, SuspiciousOperation):
        # A body Django refused (too big, too many fields): answered in this dialect's shape.
        exc = request_refusal(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if not isinstance(exc, DomainError | exceptions.APIException):
        return None
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    return Response({"error": error_message(exc)}, status=exc.status_code, headers=headers)


class AnyAcceptNegotiation(DefaultContentNegotiation):
    """Answer in the dialect's own media type whatever the client says it accepts."""

    def select_renderer(self, request, renderers, format_suffix=None):
        """Pick as usual, falling back to the first renderer instead of 406."""
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except exceptions.NotAcceptable:
            return renderers[0], renderers[0].media_type


class _HashingReader:
    """Pass a stream's reads through, hashing what passes (the package's `hash`)."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data


@extend_schema(tags=[TAG])
class SigningView(APIView):
    """A signing-dialect endpoint: API-key callers only, errors as `{"error": ...}`."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]
    content_negotiation_class = AnyAcceptNegotiation

    def get_exception_handler(self):
        """Use the dialect's error bodies."""
        return signing_exception_handler

    def get_batch(self, batch_id: str) -> Batch:
        """Return the caller's batch with this number: the one place the dialect scopes."""
        batch = None
        if batch_id.isascii() and batch_id.isdigit() and len(batch_id) <= MAX_ID_DIGITS:
            batch = (
                Batch.objects.for_account(request_account(self.request))
                .filter(number=int(batch_id))
                .first()
            )
        if batch is None:
            raise NotFound(f"batch {batch_id} not found")
        return batch


class CreateBatch(SigningView):
    """POST /api/CreateBatch/{processId}."""

    @extend_schema(
        operation_id="signing_create_batch",
        request=None,
        parameters=[OpenApiParameter("processId", int, OpenApiParameter.PATH)],
        responses={201: SigningBatchRecordSerializer, 400: SigningErrorSerializer, **ERRORS},
    )
    def post(self, request, processId):
        """Create a document.sign batch for the process."""
        path = SigningProcessIdSerializer(data={"processId": processId})
        path.is_valid(raise_exception=True)
        process_id = path.validated_data["processId"]
        batch, _ = services.batch_create(
            account=request_account(request),
            actor=request_actor(request),
            type=JOB_TYPE,
            label=f"signing process {process_id}",
            metadata={"processId": process_id},
        )
        return Response(SigningBatchRecordSerializer(batch).data, status=status.HTTP_201_CREATED)


class UploadPackage(SigningView):
    """POST /api/upload/{batchId}."""

    parser_classes = [RawBodyParser]

    @extend_schema(
        operation_id="signing_upload",
        request={"application/octet-stream": OpenApiTypes.BINARY},
        parameters=[BATCH_ID],
        responses={
            202: SigningPackageRecordSerializer,
            400: SigningErrorSerializer,
            409: SigningErrorSerializer,
            413: SigningErrorSerializer,
            **ERRORS,
        },
        description=(
            "The body is the ZIP package (files only, no directories), whatever its "
            "Content-Type says; a Content-Disposition filename names it."
        ),
    )
    def post(self, request, batchId):
        """Add the files of the ZIP package in the body as documents of the batch."""
        batch = self.get_batch(batchId)
        body = _HashingReader(request._request)
        length = request.META.get("CONTENT_LENGTH")
        services.batch_upload(
            batch=batch,
            stream=body,
            content_type=ZIP,
            content_length=int(length) if length and length.isdigit() else None,
            actor=request_actor(request),
            on_error="reject",
        )
        upload = batch.events.filter(kind="items_uploaded").order_by("-id").first()
        record = {
            "id": str(upload.pk),
            "counterpartyId": None,
            "name": self._package_name(),
            "signed": flag(False),
            "hash": body.digest.hexdigest(),
            "signature": None,
            "batchId": batch.number,
            "creationDate": upload.created_at,
            "isZip": flag(True),
            "tsaId": None,
        }
        return Response(
            SigningPackageRecordSerializer(record).data, status=status.HTTP_202_ACCEPTED
        )

    def _package_name(self) -> str:
        _, params = parse_header_parameters(self.request.headers.get("Content-Disposition", ""))
        name = PurePosixPath(params.get("filename", "").replace("\\", "/")).name
        return name or DEFAULT_PACKAGE_NAME


class BatchStatus(SigningView):
    """GET /api/BatchStatus/{batchId}."""

    @extend_schema(
        operation_id="signing_batch_status",
        parameters=[BATCH_ID],
        responses={200: SigningBatchStatusSerializer, **ERRORS},
    )
    def get(self, request, batchId):
        """Return the batch's status and every document."""
        return Response(SigningBatchStatusSerializer(self.get_batch(batchId)).data)


class AcceptBatch(SigningView):
    """POST /api/AcceptBatch."""

    @extend_schema(
        operation_id="signing_accept_batch",
        request=SigningBatchIdSerializer,
        parameters=[
            OpenApiParameter(
                "batchId", int, OpenApiParameter.QUERY, description="or in the JSON body"
            )
        ],
        responses={
            202: SigningAcceptedBatchSerializer,
            400: SigningErrorSerializer,
            409: SigningErrorSerializer,
            **ERRORS,
        },
    )
    def post(self, request):
        """Accept the batch: close it and start signing."""
        given = request.query_params.get("batchId")
        if given is None and isinstance(request.data, dict):
            given = request.data.get("batchId")
        fields = SigningBatchIdSerializer(data={"batchId": given})
        fields.is_valid(raise_exception=True)
        batch = services.batch_commit(
            batch=self.get_batch(str(fields.validated_data["batchId"])),
            actor=request_actor(request),
        )
        return Response(SigningAcceptedBatchSerializer(batch).data, status=status.HTTP_202_ACCEPTED)


class BatchFile(SigningView):
    """GET /api/batchfile/{batchId}."""

    @extend_schema(
        operation_id="signing_batch_file",
        parameters=[BATCH_ID],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **ERRORS},
        description="The signed package: every document, its .p7s, and manifest.json.",
    )
    def get(self, request, batchId):
        """Stream the signed package once the batch is closed."""
        batch = self.get_batch(batchId)
        if not batch.is_terminal:
            raise NotFound(f"batch {batch.number} is not closed yet; its package is not ready")
        response = StreamingHttpResponse(
            exports.package_stream(batch), content_type="application/octet-stream"
        )
        response["Content-Disposition"] = f'attachment; filename="batch-{batch.number}.zip"'
        return response


class BatchDeleteCache(SigningView):
    """DELETE /api/BatchDeleteCache/{batchId}."""

    @extend_schema(
        operation_id="signing_batch_delete_cache",
        parameters=[BATCH_ID],
        responses={200: SigningBatchStatusSerializer, **ERRORS},
    )
    def delete(self, request, batchId):
        """Delete the batch and its files; answer with what it held."""
        batch = self.get_batch(batchId)
        body = SigningBatchStatusSerializer(batch, context={"status": DELETED}).data
        services.batch_delete(batch=batch, actor=request_actor(request))
        return Response(body)


class SigningNotFound(CatchAllNotFound, SigningView):
    """Answer any other path under the dialect with its 404 body."""
