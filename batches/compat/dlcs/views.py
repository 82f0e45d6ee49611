"""DLCS's queue and batch endpoints: thin views that scope by customer, call a service, translate.

What differs from DLCS, and why:

- Authentication: HTTP Basic carrying a batchsite API key, as DLCS clients send their key
  and secret (see authentication.py for how the key maps), or `Authorization: Api-Key
  <key>`. A request without usable credentials is 401 with a Basic challenge.
  `{customer}` is the key's account `number`; any other customer is 404.
- A batch is named by its integer `number`; the dialect sees only the customer's
  `image.derive` batches, so batches made through other interfaces are neither listed
  nor found here.
- Submitting to the queue adds one `image.derive` item per image, its `origin` in the
  payload, and commits the batch, all at once: nothing is downloaded during the request.
  Workers fetch each origin through the outbound guard (origin hosts must be in
  BATCHSITE_OUTBOUND_ALLOWED_HOSTS; a host outside it refuses the whole submission with
  400); an origin that cannot be fetched, or an image that cannot be processed, fails
  only its image, which counts in the batch's `errors` and says why in its `error`.
- Every image is processed by `image.derive` with its default sizes; image fields other
  than `id` and `origin` are ignored. `id` is the image's key, which is what makes
  `superseded` work across batches.
- An image's `@id` is its item in batchsite's own API (DLCS's image resources are not
  served here); its `status` is the item's status.
- POST /test recomputes `superseded` and answers `{"success": true}` once it has run;
  read the batch for the value.
- `@context` is Hydra's context everywhere; errors are Hydra `Error` objects.
- Collections page with `page` and `pageSize` (default 100, at most 1000).
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from batches import services
from batches.api.authentication import (
    ApiKeyAuthentication,
    request_actor,
    request_key_account,
)
from batches.api.notfound import CatchAllNotFound
from batches.api.parsers import DepthLimitedJSONParser
from batches.api.problems import domain_error_line, flatten_errors
from batches.compat.dlcs.authentication import BasicApiKeyAuthentication
from batches.compat.dlcs.serializers import (
    HYDRA_CONTEXT,
    MAX_PAGE,
    MAX_PAGE_SIZE,
    DlcsBatchCollectionSerializer,
    DlcsBatchSerializer,
    DlcsImageCollectionSerializer,
    HydraErrorSerializer,
    PagingSerializer,
    QueueSubmissionSerializer,
    hydra_error,
)
from batches.compat.errors import dialect_exception_handler
from batches.compat.negotiation import AnyAcceptNegotiation
from batches.engine.superseding import superseded_refresh
from batches.exceptions import DomainError, NotFound
from batches.models import Account, Batch

JOB_TYPE = "image.derive"
TAG = "compat: dlcs"
# Every endpoint may answer these.
ERRORS = {401: HydraErrorSerializer, 404: HydraErrorSerializer}
# Numbers are 64-bit; a longer string of digits names nothing.
MAX_ID_DIGITS = 18
PATH_PARAMETERS = [
    OpenApiParameter("customer", int, OpenApiParameter.PATH),
    OpenApiParameter("batchId", int, OpenApiParameter.PATH),
]
PAGING_PARAMETERS = [
    OpenApiParameter(
        "page",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
        description="1-based page number",
    ),
    OpenApiParameter(
        "pageSize",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        description="members per page (default 100)",
    ),
]


def error_description(exc: DomainError | exceptions.APIException) -> str:
    """Say in one line what is wrong."""
    if isinstance(exc, exceptions.ValidationError):
        return "; ".join(
            f"{error['field']}: {error['message']}" for error in flatten_errors(exc.detail)[:5]
        )
    if isinstance(exc, exceptions.APIException):
        return str(exc.detail)
    return domain_error_line(exc)


def _error_body(exc: Exception) -> tuple[int, dict]:
    """Answer every error with a Hydra Error, never a problem document; a crash as a bare 500."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    assert isinstance(exc, DomainError | exceptions.APIException)
    return exc.status_code, hydra_error(exc.status_code, error_description(exc))


dlcs_exception_handler = dialect_exception_handler(_error_body)


class JsonLdRenderer(JSONRenderer):
    """Render JSON for clients that ask for JSON-LD."""

    media_type = "application/ld+json"


class JsonLdParser(DepthLimitedJSONParser):
    """Read JSON sent as JSON-LD."""

    media_type = "application/ld+json"


@extend_schema(tags=[TAG])
class DlcsView(APIView):
    """A DLCS-dialect endpoint: the customer's API keys only, errors as Hydra Errors."""

    # The first class names the challenge of a 401: Basic, as DLCS clients expect.
    authentication_classes = [BasicApiKeyAuthentication, ApiKeyAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer, JsonLdRenderer]
    parser_classes = [DepthLimitedJSONParser, JsonLdParser]
    content_negotiation_class = AnyAcceptNegotiation

    def get_exception_handler(self):
        """Use the dialect's error bodies."""
        return dlcs_exception_handler

    def get_account(self) -> Account:
        """Return the customer in the path: the one place the dialect scopes by tenant.

        A key sees only its own account; any other customer, real or not, is 404.
        """
        account = request_key_account(self.request)
        if _number(self.kwargs["customer"]) != account.number:
            raise NotFound(f"customer {self.kwargs['customer']} not found")
        return account

    def get_batches(self):
        """Return the customer's image batches: the only batches DLCS knows."""
        return Batch.objects.for_account(self.get_account()).filter(type=JOB_TYPE)

    def get_batch(self) -> Batch:
        """Return the customer's batch named in the path."""
        number = _number(self.kwargs["batchId"])
        batch = self.get_batches().filter(number=number).first() if number is not None else None
        if batch is None:
            raise NotFound(f"batch {self.kwargs['batchId']} not found")
        return batch

    def get_serializer_context(self) -> dict:
        """Give serializers what they need to build URLs."""
        return {"request": self.request, "customer": request_key_account(self.request).number}

    def paged(self, queryset, total: int, serializer_class, **context) -> Response:
        """Answer one page of `queryset` (of `total` members) as a hydra:Collection."""
        paging = PagingSerializer(data=self.request.query_params)
        paging.is_valid(raise_exception=True)
        page, size = paging.validated_data["page"], paging.validated_data["pageSize"]
        members = list(queryset[(page - 1) * size : page * size])
        base = self.request.build_absolute_uri(self.request.path)
        collection = {
            "@context": HYDRA_CONTEXT,
            "@id": base,
            "@type": "hydra:Collection",
            "totalItems": total,
            "pageSize": size,
            "member": members,
        }
        if total > size:
            pages = -(-total // size)
            view = {
                "@id": f"{base}?page={page}&pageSize={size}",
                "@type": "hydra:PartialCollectionView",
            }
            if page > 1:
                view["first"] = f"{base}?page=1&pageSize={size}"
                view["previous"] = f"{base}?page={page - 1}&pageSize={size}"
            if page < pages:
                view["next"] = f"{base}?page={page + 1}&pageSize={size}"
                view["last"] = f"{base}?page={pages}&pageSize={size}"
            collection["view"] = {**view, "page": page, "pageSize": size, "totalPages": pages}
        context = {**self.get_serializer_context(), **context}
        return Response(serializer_class(collection, context=context).data)


def _number(value: str) -> int | None:
    if value.isascii() and value.isdigit() and len(value) <= MAX_ID_DIGITS:
        return int(value)
    return None


class Queue(DlcsView):
    """POST /customers/{customer}/queue."""

    @extend_schema(
        operation_id="dlcs_queue_submit",
        parameters=PATH_PARAMETERS[:1],
        request=QueueSubmissionSerializer,
        responses={201: DlcsBatchSerializer, 400: HydraErrorSerializer, **ERRORS},
    )
    def post(self, request, customer):
        """Submit a collection of images: one committed batch, its workers fetch the origins."""
        account = self.get_account()
        body = QueueSubmissionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        images = [
            {
                "external_id": member["id"],
                "key": member["id"],
                "payload": {"origin": member["origin"]},
            }
            for member in body.validated_data["member"]
        ]
        batch, _ = services.batch_create(
            account=account,
            actor=request_actor(request),
            type=JOB_TYPE,
            label="dlcs queue",
            items=images,
            commit=True,
        )
        data = DlcsBatchSerializer(batch, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED)


class BatchList(DlcsView):
    """GET /customers/{customer}/queue/batches."""

    @extend_schema(
        operation_id="dlcs_batches_list",
        parameters=[*PATH_PARAMETERS[:1], *PAGING_PARAMETERS],
        responses={200: DlcsBatchCollectionSerializer, 400: HydraErrorSerializer, **ERRORS},
    )
    def get(self, request, customer):
        """List the customer's image batches, newest first."""
        batches = self.get_batches()
        return self.paged(batches, batches.count(), DlcsBatchCollectionSerializer)


class BatchDetail(DlcsView):
    """GET /customers/{customer}/queue/batches/{batchId}."""

    @extend_schema(
        operation_id="dlcs_batch_retrieve",
        parameters=PATH_PARAMETERS,
        responses={200: DlcsBatchSerializer, **ERRORS},
    )
    def get(self, request, customer, batchId):
        """Return the batch."""
        return Response(
            DlcsBatchSerializer(self.get_batch(), context=self.get_serializer_context()).data
        )


class BatchImages(DlcsView):
    """GET /customers/{customer}/queue/batches/{batchId}/images."""

    @extend_schema(
        operation_id="dlcs_batch_images",
        parameters=[*PATH_PARAMETERS, *PAGING_PARAMETERS],
        responses={200: DlcsImageCollectionSerializer, 400: HydraErrorSerializer, **ERRORS},
    )
    def get(self, request, customer, batchId):
        """List every image of the batch, whatever its state, in submission order."""
        batch = self.get_batch()
        items = batch.items.order_by("index")
        return self.paged(items, batch.total_items, DlcsImageCollectionSerializer, batch=batch)


class BatchTest(DlcsView):
    """POST /customers/{customer}/queue/batches/{batchId}/test."""

    @extend_schema(
        operation_id="dlcs_batch_test",
        parameters=PATH_PARAMETERS,
        request=None,
        responses={
            200: {"type": "object", "properties": {"success": {"type": "boolean"}}},
            **ERRORS,
        },
    )
    def post(self, request, customer, batchId):
        """Recompute the batch's `superseded` flag."""
        superseded_refresh(self.get_batch())
        return Response({"success": True})


class DlcsNotFound(CatchAllNotFound, DlcsView):
    """Answer any other path under the dialect with a Hydra 404."""
