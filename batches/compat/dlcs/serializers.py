"""DLCS's JSON-LD shapes: vocab:Batch, vocab:Image, hydra:Collection, Error; and the queue's input.

The JSON-LD keys (`@context`, `@id`, `@type`) are not Python names, so serializers add
them in get_fields, which is also where drf-spectacular reads them for the schema.
"""

from __future__ import annotations

from http import HTTPStatus

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batches.api.fields import StrictCharField
from batches.models import Batch, Item

HYDRA_CONTEXT = "http://www.w3.org/ns/hydra/context.jsonld"
NAMESPACE = "compat-dlcs"
IN_PROGRESS = frozenset({Item.Status.PENDING, Item.Status.QUEUED, Item.Status.RUNNING})
_when = serializers.DateTimeField()


def _datetime(value) -> str | None:
    return _when.to_representation(value) if value else None


def absolute(request, view: str, **kwargs) -> str:
    """Return the absolute URL of a dialect route."""
    return request.build_absolute_uri(reverse(f"{NAMESPACE}:{view}", kwargs=kwargs))


def hydra_error(status_code: int, description: str) -> dict:
    """Build a Hydra Error, the error body DLCS clients parse."""
    return {
        "@context": HYDRA_CONTEXT,
        "@type": "Error",
        "statusCode": status_code,
        "title": HTTPStatus(status_code).phrase,
        "description": description,
    }


class JsonLdSerializer(serializers.Serializer):
    """A JSON-LD node: `@context`, `@id` (from get_node_id) and a fixed `@type` first."""

    node_type = ""

    def get_fields(self):
        """Put the JSON-LD keys before the declared fields."""
        keys = {
            "@context": serializers.SerializerMethodField(method_name="get_node_context"),
            "@id": serializers.SerializerMethodField(method_name="get_node_id"),
            "@type": serializers.SerializerMethodField(method_name="get_node_type"),
        }
        return {**keys, **super().get_fields()}

    @extend_schema_field(OpenApiTypes.STR)
    def get_node_context(self, instance) -> str:
        """Return the JSON-LD context."""
        return HYDRA_CONTEXT

    @extend_schema_field(OpenApiTypes.URI)
    def get_node_id(self, instance) -> str:
        """Return the node's absolute URL."""
        raise NotImplementedError

    @extend_schema_field(OpenApiTypes.STR)
    def get_node_type(self, instance) -> str:
        """Return the node's type."""
        return self.node_type


class DlcsBatchSerializer(JsonLdSerializer):
    """A batch as a vocab:Batch; the context carries the request and the `customer` number."""

    node_type = "vocab:Batch"

    submitted = serializers.SerializerMethodField()
    count = serializers.IntegerField(source="total_items")
    completed = serializers.IntegerField(source="succeeded_items")
    finished = serializers.DateTimeField(source="finished_at", allow_null=True)
    # A wire field named like a Serializer property: DRF's metaclass moves declared fields
    # off the class, so the property stays; mypy sees an override.
    errors = serializers.IntegerField(source="failed_items")  # type: ignore[assignment]
    superseded = serializers.BooleanField()
    estCompletion = serializers.SerializerMethodField()
    images = serializers.SerializerMethodField()
    test = serializers.SerializerMethodField()

    def _url(self, batch: Batch, view: str = "batch") -> str:
        return absolute(
            self.context["request"], view, customer=self.context["customer"], batchId=batch.number
        )

    def get_node_id(self, batch: Batch) -> str:
        """Return the batch's URL in the dialect."""
        return self._url(batch)

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_submitted(self, batch: Batch) -> str:
        """Return when the batch was committed to the queue (created, if not yet)."""
        return _when.to_representation(batch.committed_at or batch.created_at)

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_estCompletion(self, batch: Batch) -> str | None:
        """Return when a running batch should end at its recent rate, or null."""
        return _datetime(batch.estimated_completion())

    @extend_schema_field(OpenApiTypes.URI)
    def get_images(self, batch: Batch) -> str:
        """Return the URL of the batch's images."""
        return self._url(batch, "batch-images")

    @extend_schema_field(OpenApiTypes.URI)
    def get_test(self, batch: Batch) -> str:
        """Return the URL that recomputes `superseded`."""
        return self._url(batch, "batch-test")


class DlcsImageSerializer(JsonLdSerializer):
    """An item as a vocab:Image; the context carries the request and the batch."""

    node_type = "vocab:Image"

    id = serializers.CharField(source="external_id")
    origin = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=Item.Status.choices)
    ingesting = serializers.SerializerMethodField()
    finished = serializers.DateTimeField(source="finished_at", allow_null=True)
    error = serializers.CharField(source="error_message")
    width = serializers.SerializerMethodField()
    height = serializers.SerializerMethodField()

    def get_node_id(self, item: Item) -> str:
        """Return the item's URL in batchsite's own API (DLCS's image resources are not served)."""
        batch = self.context["batch"]
        path = reverse("api:batch-item", kwargs={"pk": batch.pk, "index": item.index})
        return self.context["request"].build_absolute_uri(path)

    # A string, not a URI: empty for an item of a batch made through another interface.
    @extend_schema_field(OpenApiTypes.STR)
    def get_origin(self, item: Item) -> str:
        """Return the URL the image is fetched from, or an empty string."""
        payload = item.payload if isinstance(item.payload, dict) else {}
        origin = payload.get("origin")
        return origin if isinstance(origin, str) else ""

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_ingesting(self, item: Item) -> bool:
        """Return True until the image has been processed."""
        return item.status in IN_PROGRESS

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_width(self, item: Item) -> int | None:
        """Return the source image's width once it has been read."""
        return self._source(item).get("width")

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_height(self, item: Item) -> int | None:
        """Return the source image's height once it has been read."""
        return self._source(item).get("height")

    def _source(self, item: Item) -> dict:
        # The size is read from the result, so it waits until results may be shown.
        visible = self.context["batch"].results_visible
        result = item.result if visible and isinstance(item.result, dict) else {}
        source = result.get("source")
        return source if isinstance(source, dict) else {}


class PartialCollectionViewSerializer(serializers.Serializer):
    """A page of a collection, with links to its neighbours (the dict built by the view)."""

    def get_fields(self):
        """Name the JSON-LD keys."""
        return {
            "@id": serializers.URLField(),
            "@type": serializers.CharField(),
            "first": serializers.URLField(required=False),
            "previous": serializers.URLField(required=False),
            "next": serializers.URLField(required=False),
            "last": serializers.URLField(required=False),
            "page": serializers.IntegerField(),
            "pageSize": serializers.IntegerField(),
            "totalPages": serializers.IntegerField(),
        }


class HydraCollectionSerializer(serializers.Serializer):
    """A hydra:Collection (a dict built by the view) of members in `member_serializer`."""

    member_serializer: type[serializers.Serializer]

    def get_fields(self):
        """Name the JSON-LD keys and the members' shape."""
        return {
            "@context": serializers.CharField(),
            "@id": serializers.URLField(),
            "@type": serializers.CharField(),
            "totalItems": serializers.IntegerField(),
            "pageSize": serializers.IntegerField(),
            "member": self.member_serializer(many=True),
            "view": PartialCollectionViewSerializer(required=False),
        }


class DlcsBatchCollectionSerializer(HydraCollectionSerializer):
    """A page of batches."""

    member_serializer = DlcsBatchSerializer


class DlcsImageCollectionSerializer(HydraCollectionSerializer):
    """A page of a batch's images."""

    member_serializer = DlcsImageSerializer


MAX_PAGE = 1_000_000_000
MAX_PAGE_SIZE = 1000


class PagingSerializer(serializers.Serializer):
    """DLCS's paging parameters."""

    # Capped so that the offset it makes always fits the database's 64-bit integers.
    page = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=1)
    pageSize = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, default=100)


class QueuedImageSerializer(serializers.Serializer):
    """One image of a queue submission; DLCS's other image fields are accepted and ignored."""

    id = StrictCharField(max_length=255)
    origin = serializers.URLField(max_length=2000)


class QueueSubmissionSerializer(serializers.Serializer):
    """A hydra:Collection of images POSTed to the queue."""

    member = QueuedImageSerializer(many=True, allow_empty=False)

    def validate_member(self, members: list[dict]) -> list[dict]:
        """Refuse repeated image ids and more images than one request may add."""
        limit = settings.BATCHSITE_MAX_ITEMS_PER_REQUEST
        if len(members) > limit:
            raise serializers.ValidationError(f"at most {limit} images in one batch")
        seen: set[str] = set()
        for member in members:
            if member["id"] in seen:
                raise serializers.ValidationError(f"image id {member['id']!r} is repeated")
            seen.add(member["id"])
        return members


class HydraErrorSerializer(serializers.Serializer):
    """The dialect's error body (documentation only)."""

    def get_fields(self):
        """Name the JSON-LD keys."""
        return {
            "@context": serializers.CharField(),
            "@type": serializers.CharField(),
            "statusCode": serializers.IntegerField(),
            "title": serializers.CharField(),
            "description": serializers.CharField(),
        }
