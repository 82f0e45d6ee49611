"""API views: thin layers that scope by account, call a service, and serialize the answer."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from batches import exports, selectors, services
from batches.api.authentication import request_account, request_actor
from batches.api.filters import BatchFilter, ItemFilter
from batches.api.pagination import BatchPagination, IdCursorPagination, IndexCursorPagination
from batches.api.params import choice_param, form_errors, int_param
from batches.api.parsers import RawBodyParser
from batches.api.schema import problem_response
from batches.api.serializers import (
    BatchChangeSerializer,
    BatchCreateSerializer,
    BatchDetailSerializer,
    BatchErrorSerializer,
    BatchEventSerializer,
    BatchSerializer,
    FileItemSerializer,
    ItemInputSerializer,
    ItemsAddedSerializer,
    ItemSerializer,
    JobTypeSerializer,
    RerunSerializer,
    ResultsSerializer,
    UploadOptionsSerializer,
    UploadReportSerializer,
)
from batches.exceptions import InvalidInput, NotFound
from batches.models import Account, Batch, Item
from batches.selectors import RESULT_STATUSES
from jobs import job_types

# The actions that answer with the batch's detail shape.
DETAIL_ACTIONS = frozenset(
    {"retrieve", "create", "partial_update", "commit", "cancel", "rerun", "pause", "resume"}
)
UUID_PATTERN = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


class JobTypeList(APIView):
    """List the registered job types."""

    @extend_schema(responses=JobTypeSerializer(many=True), tags=["job types"])
    def get(self, request):
        """Return every job type with its payload schema."""
        types = sorted(job_types().values(), key=lambda job_type: job_type.name)
        return Response([job_type.describe() for job_type in types])


@extend_schema(tags=["batches"])
class BatchViewSet(viewsets.GenericViewSet):
    """Batches of the caller's account (every batch, for staff)."""

    serializer_class = BatchSerializer
    filterset_class = BatchFilter
    pagination_class = BatchPagination
    lookup_value_regex = UUID_PATTERN

    def get_queryset(self):
        """Return the batches this caller may see: the one place the API scopes by tenant."""
        batches = Batch.objects.select_related("account").with_unfolded_counts()
        account = request_account(self.request)
        return batches.for_account(account) if account is not None else batches

    def filter_queryset(self, queryset):
        """Apply the list filters to the list only, never to a single batch's lookup."""
        if self.action != "list":
            return queryset
        return super().filter_queryset(queryset)

    def get_serializer_class(self):
        """Use the detail shape for single batches."""
        if self.action in DETAIL_ACTIONS:
            return BatchDetailSerializer
        return BatchSerializer

    def _respond(self, batch: Batch, status_code: int = status.HTTP_200_OK) -> Response:
        batch.refresh_from_db()
        return Response(self.get_serializer(batch).data, status=status_code)

    def list(self, request):
        """List batches, newest first, filtered and paginated."""
        batches = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(batches)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        """Return one batch with its counters, progress and first errors."""
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        request={"application/json": BatchCreateSerializer},
        responses={201: BatchDetailSerializer, 200: BatchDetailSerializer},
    )
    def create(self, request):
        """Create a batch; the same client id again returns the existing batch with 200."""
        body = BatchCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        batch, created = services.batch_create(
            account=self._creating_account(data.pop("account", None)),
            actor=request_actor(request),
            **data,
        )
        return self._respond(batch, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def _creating_account(self, number: int | None) -> Account:
        account = request_account(self.request)
        if account is not None:
            if number is not None and number != account.number:
                raise InvalidInput.for_field(
                    "account",
                    "not allowed with an API key",
                    detail="an API key creates batches for its own account only",
                )
            return account
        if number is None:
            raise InvalidInput.for_field(
                "account", "is required for staff users", detail="staff users must name the account"
            )
        account = Account.objects.filter(number=number).first()
        if account is None:
            raise InvalidInput.for_field(
                "account", "no such account", detail=f"no account number {number}"
            )
        return account

    @extend_schema(
        request={"application/json": BatchChangeSerializer}, responses=BatchDetailSerializer
    )
    def partial_update(self, request, pk=None):
        """Change a live batch's label, metadata, priority, max_concurrency or deadline.

        Workers read the change when they next claim a chunk of the batch.
        """
        body = BatchChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        batch = services.batch_change(
            batch=self.get_object(), actor=request_actor(request), changes=body.validated_data
        )
        return self._respond(batch)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        """Delete the batch, its items, errors and files; every later read is 404."""
        services.batch_delete(batch=self.get_object(), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=BatchDetailSerializer)
    @action(detail=True, methods=["post"])
    def commit(self, request, pk=None):
        """Close the batch to new items and queue it for the workers."""
        batch = services.batch_commit(batch=self.get_object(), actor=request_actor(request))
        return self._respond(batch)

    @extend_schema(request=None, responses=BatchDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel the batch: unstarted items are cancelled, ended ones keep their results."""
        batch = services.batch_cancel(batch=self.get_object(), actor=request_actor(request))
        return self._respond(batch)

    @extend_schema(request=None, responses=BatchDetailSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        """Stop workers from taking new chunks of the batch; chunks in flight finish."""
        batch = services.batch_pause(batch=self.get_object(), actor=request_actor(request))
        return self._respond(batch)

    @extend_schema(request=None, responses=BatchDetailSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        """Let workers take the paused batch's chunks again."""
        batch = services.batch_resume(batch=self.get_object(), actor=request_actor(request))
        return self._respond(batch)

    @extend_schema(request={"application/json": RerunSerializer}, responses=BatchDetailSerializer)
    @action(detail=True, methods=["post"])
    def rerun(self, request, pk=None):
        """Run an ended batch's failed items (or all its items) again."""
        body = RerunSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        batch = services.batch_rerun(
            batch=self.get_object(),
            which=body.validated_data["items"],
            actor=request_actor(request),
        )
        return self._respond(batch)

    @extend_schema(
        methods=["GET"],
        parameters=[
            OpenApiParameter("status", str, many=True, enum=Item.Status.values),
            OpenApiParameter("type", str),
            OpenApiParameter("external_id", str),
        ],
        responses=ItemSerializer(many=True),
    )
    @extend_schema(
        methods=["POST"],
        request={
            "application/json": ItemInputSerializer(many=True),
            "multipart/form-data": FileItemSerializer,
        },
        responses={201: ItemsAddedSerializer},
        description="Add one item (an object) or up to 10,000 (a list); all or none.",
    )
    @action(
        detail=True,
        methods=["get", "post"],
        url_path="items",
        filterset_class=None,
        pagination_class=IndexCursorPagination,
    )
    def items(self, request, pk=None):
        """List the batch's items, or add items to it."""
        batch = self.get_object()
        if request.method == "POST":
            return self._items_add(batch)
        items = ItemFilter(request.query_params, queryset=batch.items.all(), request=request)
        if not items.is_valid():
            raise InvalidInput("invalid filter", errors=form_errors(items.errors))
        page = self.paginate_queryset(items.qs)
        data = ItemSerializer(page, many=True, context={"batch": batch}).data
        return self.get_paginated_response(data)

    def _items_add(self, batch: Batch) -> Response:
        if self.request.content_type.startswith("multipart/form-data"):
            return self._file_item_add(batch)
        data = self.request.data
        if not isinstance(data, list | dict):
            message = "must be an item object or a list of them"
            raise InvalidInput.for_field("body", message, detail=f"the body {message}")
        items = data if isinstance(data, list) else [data]
        created = services.items_add(batch=batch, items=items, actor=request_actor(self.request))
        return self._items_added(batch, created)

    def _file_item_add(self, batch: Batch) -> Response:
        fields = FileItemSerializer(data=self.request.data)
        fields.is_valid(raise_exception=True)
        values = dict(fields.validated_data)
        upload = values.pop("file")
        created = services.item_add_file(
            batch=batch,
            upload=upload,
            name=upload.name,
            size=upload.size,
            actor=request_actor(self.request),
            **values,
        )
        return self._items_added(batch, created)

    def _items_added(self, batch: Batch, created: range) -> Response:
        batch.refresh_from_db()
        body = {
            "added": len(created),
            "first_index": created[0],
            "last_index": created[-1],
            "batch": BatchSerializer(batch, context=self.get_serializer_context()).data,
        }
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(
        request={
            "application/x-ndjson": OpenApiTypes.BINARY,
            "application/json": OpenApiTypes.BINARY,
            "text/csv": OpenApiTypes.BINARY,
            "application/zip": OpenApiTypes.BINARY,
            "application/octet-stream": OpenApiTypes.BINARY,
        },
        parameters=[
            OpenApiParameter("on_error", str, enum=["skip", "reject"]),
            OpenApiParameter("dry_run", bool),
            OpenApiParameter("csv_types", str, enum=["string", "infer"]),
            OpenApiParameter("payload", str, description="JSON object for every ZIP member"),
        ],
        responses=UploadReportSerializer,
    )
    @action(detail=True, methods=["post"], parser_classes=[RawBodyParser], filterset_class=None)
    def upload(self, request, pk=None):
        """Add the items of a JSONL, JSON array, CSV or ZIP file sent as the body, streamed.

        An application/octet-stream body is read in the format its first bytes show.
        """
        options = UploadOptionsSerializer(data=request.query_params)
        options.is_valid(raise_exception=True)
        length = request.META.get("CONTENT_LENGTH")
        report = services.batch_upload(
            batch=self.get_object(),
            stream=request._request,
            content_type=request.content_type,
            content_length=int(length) if length and length.isdigit() else None,
            actor=request_actor(request),
            **options.validated_data,
        )
        return Response(report)

    @extend_schema(responses=ItemSerializer)
    @action(detail=True, methods=["get"], url_path=r"items/(?P<index>[0-9]+)", filterset_class=None)
    def item(self, request, pk=None, index=None):
        """Return one item by its index."""
        batch = self.get_object()
        item = batch.items.filter(index=int(index)).first()
        if item is None:
            raise NotFound(f"batch has no item {index}")
        return Response(ItemSerializer(item, context={"batch": batch}).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="Cursor: the `next` link carries it."),
            OpenApiParameter("limit", int, description="Items per page (at most 1000)."),
            OpenApiParameter("type", str),
            OpenApiParameter("status", str, enum=RESULT_STATUSES),
        ],
        responses=ResultsSerializer,
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def results(self, request, pk=None):
        """Return results progressively: items in the order they ended, grouped by type."""
        batch = self.get_object()
        after = int_param(request, "after", 0, minimum=0)
        limit = int_param(request, "limit", 100, minimum=1, maximum=1000)
        wanted = request.query_params.get("status")
        if wanted and wanted not in RESULT_STATUSES:
            message = f"must be one of {', '.join(RESULT_STATUSES)}"
            raise InvalidInput.for_field("status", message)
        page = selectors.results_page(
            batch=batch,
            after=after,
            limit=limit,
            type=request.query_params.get("type"),
            status=wanted,
        )
        grouped: dict[str, list] = {}
        for item in page.items:
            grouped.setdefault(item.type, []).append(
                ItemSerializer(item, context={"batch": batch}).data
            )
        next_url = None
        if page.more:
            query = request.query_params.copy()
            query["after"] = str(page.next_after)
            next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
        return Response(
            {
                "status": batch.status,
                "statuses": page.statuses,
                "results": grouped,
                "next": next_url,
            }
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=["jsonl", "csv"]),
            OpenApiParameter("status", str, many=True, enum=Item.Status.values),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiTypes.BINARY,
            (200, "text/csv"): OpenApiTypes.BINARY,
        },
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def export(self, request, pk=None):
        """Stream every item (or those in the given statuses) as JSON lines or CSV."""
        batch = self.get_object()
        fmt = choice_param(request, "format", ["jsonl", "csv"], default="jsonl")
        statuses = request.query_params.getlist("status")
        unknown = sorted(set(statuses) - set(Item.Status.values))
        if unknown:
            message = f"unknown status {', '.join(unknown)}"
            raise InvalidInput.for_field("status", message, detail=message)
        return exports.batch_download(batch, f"items.{fmt}", statuses=statuses)

    @extend_schema(
        responses={
            (200, "application/zip"): OpenApiTypes.BINARY,
            **problem_response(
                409,
                "`batch_not_finished`: the package is ready once it ends; `results_hidden`: "
                "an atomic batch that did not finish published no results.",
            ),
        }
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def package(self, request, pk=None):
        """Stream a ZIP of every output file of an ended batch, with a manifest.json."""
        batch = self.get_object()
        exports.package_check(batch)
        return exports.batch_download(batch, "package.zip")

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["json", "csv"])],
        responses={
            (200, "application/json"): BatchErrorSerializer(many=True),
            (200, "text/csv"): OpenApiTypes.BINARY,
        },
    )
    @action(detail=True, methods=["get"], filterset_class=None, pagination_class=IdCursorPagination)
    def errors(self, request, pk=None):
        """List every error of the batch (or stream them all as CSV with ?format=csv)."""
        batch = self.get_object()
        if choice_param(request, "format", ["json", "csv"], default="json") == "csv":
            return exports.batch_download(batch, "errors.csv")
        page = self.paginate_queryset(batch.errors.all())
        return self.get_paginated_response(BatchErrorSerializer(page, many=True).data)

    @extend_schema(responses=BatchEventSerializer(many=True))
    @action(detail=True, methods=["get"], filterset_class=None, pagination_class=IdCursorPagination)
    def events(self, request, pk=None):
        """Return the batch's timeline."""
        batch = self.get_object()
        page = self.paginate_queryset(batch.events.all())
        return self.get_paginated_response(BatchEventSerializer(page, many=True).data)
