"""The signing dialect's endpoints: thin views that find the batch, call a service, translate.

What differs from the source API, and why:

- Authentication: the source API documents none; batchsite needs a tenant, so every
  request carries `Authorization: Api-Key <key>` (401 without a usable key).
- Error bodies: the source API documents statuses without bodies; errors here answer
  `{"error": "<what is wrong>"}` with the documented status (400, 404) or, for cases it
  does not document, the status batchsite uses (401, 409 for a batch in the wrong
  state, 413 for a package over the size limit, 415 for a body it cannot read).
- Processes: `processId` names a job type through BATCHSITE_SIGNING_PROCESSES (by
  default 1 signs with `document.sign`, 2 validates with `document.verify`); any other
  processId is the documented 400. A validation package holds each document beside its
  detached signature `NAME.EXT.p7s`; each pair is one document.
- Ids: a batch's id is its integer `number`. CreateBatch sends it as a string and the
  other records as an integer, as the source API's examples do. A document's id is its
  item's primary key, as a string; an uploaded package's id is its upload's entry in the
  batch timeline.
- Fields the client sends are answered as sent: `providerSettingsId` (CreateBatch; "1"
  when not sent, as batchsite has one signer), `counterpartyId` and `tsaId` (upload; null
  when not sent). They are kept, not acted on. `creationDate` is in UTC.
- Parameters may come in the path, the query string or the body (JSON, a form, or
  multipart); the same parameter sent twice with different values is refused (400).
  AcceptBatch takes its batchId in the path (as the document lists it) or the query
  string or the body. The package is the body whatever its Content-Type, or the one file
  of a multipart body.
- A non-integer batchId in the path names no batch: 404.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Any

from django.http import Http404
from django.utils.http import parse_header_parameters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from batches import exports, services
from batches.api.authentication import (
    ApiKeyAuthentication,
    request_actor,
    request_key_account,
)
from batches.api.notfound import CatchAllNotFound
from batches.api.parsers import DepthLimitedJSONParser, RawBodyParser
from batches.api.problems import domain_error_line, flatten_errors
from batches.compat.errors import dialect_exception_handler
from batches.compat.negotiation import AnyAcceptNegotiation
from batches.compat.signing import packages
from batches.compat.signing.serializers import (
    DELETED,
    SigningAcceptedBatchSerializer,
    SigningBatchIdSerializer,
    SigningBatchRecordSerializer,
    SigningBatchStatusSerializer,
    SigningCreateFieldsSerializer,
    SigningErrorSerializer,
    SigningPackageRecordSerializer,
    SigningProcessIdSerializer,
    SigningUploadFieldsSerializer,
    flag,
)
from batches.exceptions import DomainError, InvalidInput, NotFound
from batches.ingest.staging import BinaryReader
from batches.models import Batch

ZIP = "application/zip"
MULTIPART = "multipart/form-data"
DEFAULT_PACKAGE_NAME = "package.zip"
TAG = "compat: signing"
# Every endpoint may answer these.
ERRORS = {401: SigningErrorSerializer, 404: SigningErrorSerializer}
BATCH_ID = OpenApiParameter("batchId", int, OpenApiParameter.PATH)
BODY = ["application/json", "application/x-www-form-urlencoded", MULTIPART]
# Batch numbers are 64-bit; a longer string of digits names no batch.
MAX_ID_DIGITS = 18


def error_message(exc: DomainError | exceptions.APIException) -> str:
    """Say in one line what is wrong, with the first details a domain error carries."""
    if isinstance(exc, exceptions.ValidationError):
        return "; ".join(error["message"] for error in flatten_errors(exc.detail)[:5])
    if isinstance(exc, exceptions.APIException):
        return str(exc.detail)
    return domain_error_line(exc)


def _error_body(exc: Exception) -> tuple[int, dict[str, str]]:
    """Answer every error with `{"error": "..."}`, never a problem document; a crash as a
    bare 500."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    assert isinstance(exc, DomainError | exceptions.APIException)
    return exc.status_code, {"error": error_message(exc)}


signing_exception_handler = dialect_exception_handler(_error_body)


class _HashingReader:
    """Pass a stream's reads through, hashing what passes (the package's `hash`)."""

    def __init__(self, stream: BinaryReader):
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
    parser_classes = [DepthLimitedJSONParser, FormParser, MultiPartParser]
    content_negotiation_class = AnyAcceptNegotiation

    def get_exception_handler(self):
        """Use the dialect's error bodies."""
        return signing_exception_handler

    def sent(self, names: tuple[str, ...], **path: str | None) -> dict[str, Any]:
        """Return which of `names` the client sent, in the path, the query string or the body.

        The same field sent twice with different values is refused rather than guessed at.
        """
        body = self.request.data if isinstance(self.request.data, dict) else {}
        found = {}
        for name in names:
            values = [
                value
                for value in (path.get(name), self.request.query_params.get(name), body.get(name))
                if value is not None
            ]
            if len({str(value) for value in values}) > 1:
                raise exceptions.ValidationError(
                    {name: f"{name} is sent more than once, with different values"}
                )
            if values:
                found[name] = values[0]
        return found

    def get_batch(self, batch_id: str) -> Batch:
        """Return the caller's batch with this number: the one place the dialect scopes."""
        batch = None
        if batch_id.isascii() and batch_id.isdigit() and len(batch_id) <= MAX_ID_DIGITS:
            batch = (
                Batch.objects.for_account(request_key_account(self.request))
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
        request={media: SigningCreateFieldsSerializer for media in BODY},
        parameters=[
            OpenApiParameter("processId", int, OpenApiParameter.PATH),
            OpenApiParameter("providerSettingsId", str, description="or in the body"),
        ],
        responses={
            201: SigningBatchRecordSerializer,
            400: SigningErrorSerializer,
            415: SigningErrorSerializer,
            **ERRORS,
        },
        description=(
            "The process names the job: by default 1 signs (document.sign) and 2 validates "
            "(document.verify); see BATCHSITE_SIGNING_PROCESSES."
        ),
    )
    def post(self, request, processId):
        """Create a batch of the process's job type."""
        path = SigningProcessIdSerializer(data={"processId": processId})
        path.is_valid(raise_exception=True)
        process_id = path.validated_data["processId"]
        job_type = packages.process_job_type(process_id)
        if job_type is None:
            raise InvalidInput(
                f"The processId value {process_id} is not valid; the processes are "
                f"{packages.processes_described()}"
            )
        fields = SigningCreateFieldsSerializer(data=self.sent(("providerSettingsId",)))
        fields.is_valid(raise_exception=True)
        batch, _ = services.batch_create(
            account=request_key_account(request),
            actor=request_actor(request),
            type=job_type,
            label=f"signing process {process_id}",
            metadata={"processId": process_id, **fields.validated_data},
        )
        return Response(SigningBatchRecordSerializer(batch).data, status=status.HTTP_201_CREATED)


class UploadPackage(SigningView):
    """POST /api/upload/{batchId}."""

    # A multipart body carries the package as a file; any other body is the package.
    parser_classes = [MultiPartParser, RawBodyParser]

    @extend_schema(
        operation_id="signing_upload",
        request={
            "application/octet-stream": OpenApiTypes.BINARY,
            MULTIPART: {
                "type": "object",
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "counterpartyId": {"type": "string"},
                    "tsaId": {"type": "string"},
                },
                "required": ["file"],
            },
        },
        parameters=[
            BATCH_ID,
            OpenApiParameter("counterpartyId", str, description="answered as sent"),
            OpenApiParameter("tsaId", str, description="answered as sent"),
        ],
        responses={
            202: SigningPackageRecordSerializer,
            400: SigningErrorSerializer,
            409: SigningErrorSerializer,
            413: SigningErrorSerializer,
            **ERRORS,
        },
        description=(
            "The body is the ZIP package (files only, no directories), whatever its "
            "Content-Type says, or the one file of a multipart body; a Content-Disposition "
            "filename (or the file's) names it. For a validation process, each document "
            "NAME.EXT goes beside its detached signature NAME.EXT.p7s."
        ),
    )
    def post(self, request, batchId):
        """Add the files of the ZIP package in the body as documents of the batch."""
        batch = self.get_batch(batchId)
        fields = SigningUploadFieldsSerializer(data=self.sent(("counterpartyId", "tsaId")))
        fields.is_valid(raise_exception=True)
        if request.content_type.startswith(MULTIPART):
            package = self._package_file()
            body, length, name = _HashingReader(package), package.size, package.name
        else:
            header = request.META.get("CONTENT_LENGTH")
            body = _HashingReader(request._request)
            length = int(header) if header and header.isdigit() else None
            name = self._disposition_name()
        services.batch_upload(
            batch=batch,
            stream=body,
            content_type=ZIP,
            content_length=length,
            actor=request_actor(request),
            on_error="reject",
            regroup=packages.signature_pairs if packages.pairs_signatures(batch.type) else None,
        )
        upload = batch.events.filter(kind="items_uploaded").latest("id")
        record = {
            "id": str(upload.pk),
            "counterpartyId": fields.validated_data.get("counterpartyId"),
            "name": _base_name(name) or DEFAULT_PACKAGE_NAME,
            "signed": flag(False),
            "hash": body.digest.hexdigest(),
            "signature": None,
            "batchId": batch.number,
            "creationDate": upload.created_at,
            "isZip": flag(True),
            "tsaId": fields.validated_data.get("tsaId"),
        }
        return Response(
            SigningPackageRecordSerializer(record).data, status=status.HTTP_202_ACCEPTED
        )

    def _package_file(self):
        files = [upload for _, upload in self.request.FILES.items()]
        if len(files) != 1:
            raise InvalidInput(
                f"a multipart upload carries exactly one file, the ZIP package; this one has "
                f"{len(files)}"
            )
        return files[0]

    def _disposition_name(self) -> str:
        _, params = parse_header_parameters(self.request.headers.get("Content-Disposition", ""))
        return params.get("filename", "")


def _base_name(name: str) -> str:
    """Return a client-given file name without any folder it names."""
    return PurePosixPath(name.replace("\\", "/")).name


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


ACCEPTED_RESPONSES = {
    202: SigningAcceptedBatchSerializer,
    400: SigningErrorSerializer,
    409: SigningErrorSerializer,
    415: SigningErrorSerializer,
    **ERRORS,
}


class BatchAcceptView(SigningView):
    """An endpoint that accepts a batch; its two routes say differently which one."""

    def accept(self, batch: Batch) -> Response:
        """Commit the batch and answer its record."""
        batch = services.batch_commit(batch=batch, actor=request_actor(self.request))
        return Response(SigningAcceptedBatchSerializer(batch).data, status=status.HTTP_202_ACCEPTED)


class AcceptBatch(BatchAcceptView):
    """POST /api/AcceptBatch?batchId= (or batchId in the body)."""

    @extend_schema(
        operation_id="signing_accept_batch",
        request={media: SigningBatchIdSerializer for media in BODY},
        parameters=[
            OpenApiParameter("batchId", int, OpenApiParameter.QUERY, description="or in the body")
        ],
        responses=ACCEPTED_RESPONSES,
    )
    def post(self, request):
        """Accept the batch: close it and start its process."""
        fields = SigningBatchIdSerializer(data={"batchId": self.sent(("batchId",)).get("batchId")})
        fields.is_valid(raise_exception=True)
        return self.accept(self.get_batch(str(fields.validated_data["batchId"])))


class AcceptBatchById(BatchAcceptView):
    """POST /api/AcceptBatch/{batchId}, as the document lists batchId: a path parameter."""

    @extend_schema(
        operation_id="signing_accept_batch_by_id",
        request=None,
        parameters=[BATCH_ID],
        responses=ACCEPTED_RESPONSES,
    )
    def post(self, request, batchId):
        """Accept the batch named in the path."""
        self.sent(("batchId",), batchId=batchId)  # refuses a different batchId elsewhere
        return self.accept(self.get_batch(batchId))


class BatchFile(SigningView):
    """GET /api/batchfile/{batchId}."""

    @extend_schema(
        operation_id="signing_batch_file",
        parameters=[BATCH_ID],
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            409: SigningErrorSerializer,
            **ERRORS,
        },
        description=(
            "The signed package: every document, its .p7s, and manifest.json. 409 for an "
            "atomic batch that closed without finishing: it published no signature."
        ),
    )
    def get(self, request, batchId):
        """Stream the signed package once the batch is closed."""
        batch = self.get_batch(batchId)
        if not batch.is_terminal:
            raise NotFound(f"batch {batch.number} is not closed yet; its package is not ready")
        exports.package_check(batch)
        return exports.attachment_response(
            exports.package_stream(batch),
            filename=f"batch-{batch.number}.zip",
            content_type="application/octet-stream",
        )


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
