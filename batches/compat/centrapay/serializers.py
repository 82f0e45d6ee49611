"""Centrapay's batch shapes: camelCase fields and BigNumbers as strings."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batches.models import Batch, BatchError, Item
from jobs import get_job_type

# batchsite state -> Centrapay's lifecycle: created -> copied -> chunked -> complete | error.
BATCH_STATUSES: dict[str, str] = {
    Batch.Status.CREATED: "created",
    Batch.Status.INGESTING: "created",
    Batch.Status.OPEN: "copied",
    Batch.Status.COMMITTED: "copied",
    Batch.Status.RUNNING: "chunked",
    Batch.Status.CANCELLING: "chunked",
    Batch.Status.FINALIZING: "chunked",
    Batch.Status.FINISHED: "complete",
    Batch.Status.STOPPED: "complete",
    Batch.Status.CANCELLED: "complete",
    Batch.Status.EXPIRED: "complete",
    Batch.Status.FAILED: "error",
}
STATUS_NAMES = ["created", "copied", "chunked", "complete", "error"]

# A batch lists at most this many errors; `errorCount` counts them all.
ERRORS_SHOWN = 1000


def _failed_items(batch: Batch, limit: int) -> list[dict]:
    """Return the first `limit` failed items of the batch as errors, by index.

    An item's `index` is its line, row or member in the batch file when it came from
    one (so it points where a refused line's index does), else its index in the batch.
    """
    if limit <= 0 or not batch.failed_items:
        return []
    failed = (
        Item.objects.filter(batch=batch, status=Item.Status.FAILED)
        .order_by("index")
        .values("index", "source_index", "external_id", "error_code", "error_message")[:limit]
    )
    return [
        {
            "external_id": item["external_id"],
            "index": item["index"] if item["source_index"] is None else item["source_index"],
            "message": item["error_message"] or item["error_code"],
        }
        for item in failed
    ]


class CentrapayBatchCreateSerializer(serializers.Serializer):
    """The body of `POST /api/batches`."""

    type = serializers.CharField(help_text="A batch type from `GET /api/batch-types`.")
    url = serializers.URLField(max_length=2000, help_text="Where the batch file is located.")
    accountId = serializers.CharField(help_text="The caller's account: its number or its name.")

    def validate_type(self, value: str) -> str:
        """Refuse a type that is not registered."""
        if get_job_type(value) is None:
            raise serializers.ValidationError(
                f"unknown batch type {value!r}; GET /api/batch-types lists them"
            )
        return value


class CentrapayBatchErrorSerializer(serializers.Serializer):
    """One error of a batch (a BatchError, or a failed item as a dict); externalId and
    index only when the error has them."""

    externalId = serializers.CharField(source="external_id", required=False)
    index = serializers.CharField(required=False, help_text="A BigNumber, as a string.")
    message = serializers.CharField()

    def to_representation(self, error: BatchError) -> dict:
        """Leave out the optional fields the error has no value for."""
        body = super().to_representation(error)
        return {key: value for key, value in body.items() if value not in (None, "")}


class CentrapayBatchSerializer(serializers.Serializer):
    """A batch as Centrapay shows it."""

    id = serializers.CharField()
    status = serializers.SerializerMethodField()
    type = serializers.CharField()
    count = serializers.CharField(source="total_items", help_text="A BigNumber, as a string.")
    errorCount = serializers.SerializerMethodField(method_name="get_error_count")
    # A wire field named like a Serializer property: DRF's metaclass moves declared fields
    # off the class, so the property stays; mypy sees an override.
    errors = serializers.SerializerMethodField()  # type: ignore[assignment]

    @extend_schema_field(serializers.ChoiceField(choices=STATUS_NAMES))
    def get_status(self, batch: Batch) -> str:
        """Return the batch's state in Centrapay's lifecycle."""
        return BATCH_STATUSES[batch.status]

    @extend_schema_field(serializers.CharField(help_text="A BigNumber, as a string."))
    def get_error_count(self, batch: Batch) -> str:
        """Count refused lines, batch-level failures and failed items, from the counters."""
        return str(batch.error_count + batch.failed_items)

    @extend_schema_field(CentrapayBatchErrorSerializer(many=True))
    def get_errors(self, batch: Batch) -> list[dict]:
        """Return the batch's first errors: refused lines and batch-level failures in the
        order they were found, then failed items by index."""
        errors: list[BatchError | dict[str, Any]] = list(
            BatchError.objects.filter(batch=batch).order_by("id")[:ERRORS_SHOWN]
        )
        errors += _failed_items(batch, ERRORS_SHOWN - len(errors))
        # With many=True this is a ListSerializer, whose data is a list; the stubs type the
        # call as the item serializer.
        return CentrapayBatchErrorSerializer(errors, many=True).data  # type: ignore[return-value]


class CentrapayBatchTypeSerializer(serializers.Serializer):
    """A batch type: a registered job type."""

    name = serializers.CharField()
    description = serializers.CharField()


class CentrapayErrorSerializer(serializers.Serializer):
    """Every failure: a message, with the HTTP status saying what kind."""

    message = serializers.CharField()
