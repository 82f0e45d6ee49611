"""The signing dialect's shapes: its status ids and names, and its stringly-typed records.

Field names are the source API's own (camelCase), and its booleans are the strings
"true" and "false".
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batches.models import Batch, Item

# The source API's status table: the position is the status id.
STATUSES = ["NEW", "UPLOADED", "ACCEPTED", "READY", "IN_PROGRESS", "FINISHING", "CLOSED", "DELETED"]
DELETED = "DELETED"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# batchsite has one signer and no provider settings: a batch created without a
# providerSettingsId says the source API's example value.
PROVIDER_SETTINGS_ID = "1"
# Fields a client may send that the dialect keeps and answers with, as they were sent.
ECHO_MAX_LENGTH = 100

_STATUS_OF: dict[str, str] = {
    Batch.Status.CREATED: "NEW",
    Batch.Status.INGESTING: "NEW",
    Batch.Status.OPEN: "UPLOADED",
    Batch.Status.COMMITTED: "ACCEPTED",
    Batch.Status.RUNNING: "IN_PROGRESS",
    Batch.Status.CANCELLING: "FINISHING",
    Batch.Status.FINALIZING: "FINISHING",
}


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
        "example": "2024-06-11 14:30:00",
        "description": "UTC, as `yyyy-MM-dd HH:mm:ss`.",
    }
)
class SigningDateTimeField(serializers.DateTimeField):
    """A time the way the source API writes it: `yyyy-MM-dd HH:mm:ss`, not ISO 8601."""

    def __init__(self, **kwargs):
        super().__init__(format=DATE_FORMAT, **kwargs)


def status_name(batch: Batch) -> str:
    """Return the source API's status name for a batch: every ended batch is CLOSED."""
    return "CLOSED" if batch.is_terminal else _STATUS_OF[batch.status]


def status_id(name: str) -> str:
    """Return the numeric status id of a status name, as the string the API sends."""
    return str(STATUSES.index(name))


def flag(value: bool) -> str:
    """Write a boolean the way the source API does: as the string "true" or "false"."""
    return "true" if value else "false"


def echoed_field() -> serializers.CharField:
    """Return a field whose value is answered back as sent (a number is answered as a string)."""
    return serializers.CharField(required=False, max_length=ECHO_MAX_LENGTH)


class SigningProcessIdSerializer(serializers.Serializer):
    """The path parameter of CreateBatch."""

    processId = serializers.IntegerField(error_messages={"invalid": "processId must be an integer"})


class SigningCreateFieldsSerializer(serializers.Serializer):
    """What CreateBatch keeps from the query string or the body (JSON or a form)."""

    providerSettingsId = echoed_field()


class SigningUploadFieldsSerializer(serializers.Serializer):
    """What upload answers with from the query string (or the fields of a multipart body)."""

    counterpartyId = echoed_field()
    tsaId = echoed_field()


class SigningBatchIdSerializer(serializers.Serializer):
    """The batchId of AcceptBatch, from the query string or the body (JSON or a form)."""

    batchId = serializers.IntegerField(
        error_messages={
            "invalid": "batchId must be an integer",
            "required": "batchId is required",
            "null": "batchId is required",
        }
    )


class SigningBatchRecordSerializer(serializers.Serializer):
    """The record CreateBatch answers: the id as a string, the status as its numeric id."""

    id = serializers.CharField(source="number")
    providerSettingsId = serializers.SerializerMethodField()
    creationDate = SigningDateTimeField(source="created_at")
    status = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.STR)
    def get_providerSettingsId(self, batch: Batch) -> str:
        """Return the providerSettingsId the batch was created with ("1" if none was sent)."""
        return batch.metadata.get("providerSettingsId", PROVIDER_SETTINGS_ID)

    @extend_schema_field(OpenApiTypes.STR)
    def get_status(self, batch: Batch) -> str:
        """Return the numeric status id, as a string ("0" is NEW)."""
        return status_id(status_name(batch))


class SigningAcceptedBatchSerializer(SigningBatchRecordSerializer):
    """The record AcceptBatch answers: as CreateBatch's, with an integer id."""

    # Declared anew with another type, as DRF allows: fields are collected by name.
    id = serializers.IntegerField(source="number")  # type: ignore[assignment]


class SigningPackageRecordSerializer(serializers.Serializer):
    """The record of an uploaded package (a dict built by the upload view)."""

    id = serializers.CharField(help_text="The upload's entry in the batch timeline.")
    counterpartyId = serializers.CharField(allow_null=True)
    name = serializers.CharField()
    signed = serializers.CharField()
    hash = serializers.CharField(help_text="SHA-256 of the package, in hex.")
    signature = serializers.CharField(allow_null=True)
    batchId = serializers.IntegerField()
    creationDate = SigningDateTimeField()
    isZip = serializers.CharField()
    tsaId = serializers.CharField(allow_null=True)


def document_succeeded(item: Item) -> bool:
    """Say whether the document's process succeeded: signed, or its signature found valid."""
    result = item.result if isinstance(item.result, dict) else {}
    return item.status == Item.Status.SUCCEEDED and result.get("valid") is not False


class SigningDocumentSerializer(serializers.Serializer):
    """One document of a batch: an item, named by its pk and its file name.

    The context names the documents' `batch`.
    """

    id = serializers.CharField(source="pk")
    signed = serializers.SerializerMethodField()
    fileName = serializers.CharField(source="external_id")
    signingResult_Success = serializers.SerializerMethodField()

    def _signed(self, item: Item) -> bool:
        # A signature counts once the batch may show its results (Batch.results_visible).
        return document_succeeded(item) and self.context["batch"].results_visible

    @extend_schema_field(OpenApiTypes.STR)
    def get_signed(self, item: Item) -> str:
        """Return "true" once the document is signed (or, validated, its signature is valid)."""
        return flag(self._signed(item))

    @extend_schema_field(OpenApiTypes.STR)
    def get_signingResult_Success(self, item: Item) -> str:
        """Return "true" when signing (or validation) succeeded; "false" while pending or not."""
        return flag(self._signed(item))


class SigningBatchStatusSerializer(serializers.Serializer):
    """A batch's status with every document; the context may force the status (DELETED)."""

    id = serializers.IntegerField(source="number")
    status = serializers.SerializerMethodField()
    creationDate = SigningDateTimeField(source="created_at")
    documents = serializers.SerializerMethodField()

    @extend_schema_field(serializers.ChoiceField(choices=STATUSES))
    def get_status(self, batch: Batch) -> str:
        """Return the status name."""
        return self.context.get("status") or status_name(batch)

    @extend_schema_field(SigningDocumentSerializer(many=True))
    def get_documents(self, batch: Batch) -> list[dict]:
        """Return every document of the batch, in upload order, in one query."""
        items = batch.items.order_by("index").only("pk", "external_id", "status", "result")
        # With many=True this is a ListSerializer, whose data is a list; the stubs type the
        # call as the item serializer.
        return SigningDocumentSerializer(items, many=True, context={"batch": batch}).data  # type: ignore[return-value]


class SigningErrorSerializer(serializers.Serializer):
    """The dialect's error body."""

    error = serializers.CharField()
