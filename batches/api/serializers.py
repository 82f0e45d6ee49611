"""Input serializers (strict: unknown fields and wrong types are refused; the fields are in
batches.api.fields) and output shapes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batches import selectors
from batches.api.fields import (
    DepthLimitedJSONField,
    JobTypeNameField,
    JSONObjectField,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
    StrictUUIDField,
)
from batches.models import Batch, BatchError, BatchEvent, Item

# --- input ---------------------------------------------------------------------------------------

# The largest value of an integer column on every database we run on.
MAX_INT32 = 2**31 - 1


class WebhookEventsField(serializers.ListField):
    """Webhook event names; an unknown one is reported at its place (`webhook_events[1]`)."""

    def __init__(self, **kwargs):
        """Take names from Batch.WEBHOOK_EVENTS, each at most once."""
        kwargs.setdefault("max_length", 2 * len(Batch.WEBHOOK_EVENTS))
        super().__init__(child=serializers.ChoiceField(choices=Batch.WEBHOOK_EVENTS), **kwargs)

    def run_child_validation(self, data):
        """Validate each name, turning DRF's {position: errors} into a list by position."""
        try:
            return super().run_child_validation(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            # Keyed by position (ints), whatever the stubs say.
            errors: dict[Any, Any] = exc.detail
            by_position = [errors.get(position, []) for position in range(len(data))]
            raise serializers.ValidationError(by_position) from exc


def priority_field() -> StrictIntegerField:
    """Return the field of a batch's priority (an option at creation, changeable later)."""
    return StrictIntegerField(
        required=False,
        min_value=-100,
        max_value=100,
        help_text="Workers take chunks of higher-priority batches first (default 0).",
    )


def max_concurrency_field() -> StrictIntegerField:
    """Return the field of a batch's max_concurrency (null: no limit)."""
    return StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=10_000,
        help_text="Most chunks of this batch processed at once (default: no limit).",
    )


def deadline_field() -> serializers.DateTimeField:
    """Return the field of a batch's deadline (null: none)."""
    return serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="Cancel whatever has not run by then; the batch ends `expired`.",
    )


def deadline_check(value):
    """Refuse a deadline that has already passed."""
    if value is not None and value <= timezone.now():
        raise serializers.ValidationError("Must be in the future.")
    return value


class BatchOptionsSerializer(StrictSerializer):
    """How the batch behaves on failure."""

    stop_on_error = StrictBooleanField(
        required=False, help_text="Stop the batch at the first failed item."
    )
    max_failures = StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=MAX_INT32,
        help_text="Stop the batch once more than this many items failed.",
    )
    atomic = StrictBooleanField(
        required=False,
        help_text="Publish results all or none: one failed item fails the whole batch.",
    )
    not_before = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Once committed, start no earlier than this."
    )
    deadline = deadline_field()
    retention_days = StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=Batch.MAX_RETENTION_DAYS,
        help_text="Days to keep the batch after it ends (default: the server's setting).",
    )
    callback_url = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=2000,
        help_text=(
            "Receives a signed POST when the batch ends (see the README's Webhooks); its "
            "host must be in BATCHSITE_OUTBOUND_ALLOWED_HOSTS."
        ),
    )
    webhook_events = WebhookEventsField(
        required=False,
        help_text=(
            'The events posted to callback_url (default: ["batch.ended"]): `batch.ended` '
            "(any end, sent as `batch.<final state>`) or one end by name, `batch.progress` "
            "(while it runs, at most every BATCHSITE_WEBHOOK_PROGRESS_SECONDS) and "
            "`item.failed` (failed items, grouped as the workers write them). Needs a "
            "callback_url."
        ),
    )
    priority = priority_field()
    max_concurrency = max_concurrency_field()

    def validate_deadline(self, value):
        """Refuse a deadline that has already passed."""
        return deadline_check(value)

    def validate(self, attrs):
        """Refuse a not_before after the deadline."""
        not_before, deadline = attrs.get("not_before"), attrs.get("deadline")
        if not_before and deadline and not_before >= deadline:
            raise serializers.ValidationError({"not_before": "Must be before the deadline."})
        return attrs


class ItemInputSerializer(StrictSerializer):
    """One item, as added through POST batches/{id}/items/."""

    # Documentation only: the service checks items against their job type's own schema.
    external_id = StrictCharField(required=False, max_length=255)
    type = JobTypeNameField(required=False, max_length=100)
    key = StrictCharField(required=False, max_length=255)
    payload = JSONObjectField()


@extend_schema_field(ItemInputSerializer(many=True))
class ItemListField(DepthLimitedJSONField):
    """Items as JSON, each checked by the service against its job type."""


class BatchCreateSerializer(StrictSerializer):
    """The body of POST batches/."""

    id = StrictUUIDField(required=False, help_text="Client-chosen id (idempotent create).")
    type = JobTypeNameField(required=False, max_length=100, help_text="Default job type.")
    # A wire field named like a Field attribute: DRF's metaclass moves declared fields off
    # the class, so the attribute stays; mypy sees an override.
    label = StrictCharField(required=False, allow_blank=True, max_length=200)  # type: ignore[assignment]
    metadata = JSONObjectField(required=False, help_text="Any JSON object, kept as is.")
    options = BatchOptionsSerializer(required=False)
    items = ItemListField(
        required=False, help_text="Items to add at once (see POST batches/{id}/items/)."
    )
    source_url = StrictCharField(
        required=False,
        max_length=2000,
        help_text=(
            "A JSONL, CSV or ZIP file of items for a worker to download; its host must be "
            "in BATCHSITE_OUTBOUND_ALLOWED_HOSTS. The batch is `ingesting` meanwhile."
        ),
    )
    commit = StrictBooleanField(
        required=False,
        default=False,
        help_text="Commit right away (with source_url: as soon as the file has been read).",
    )
    account = StrictIntegerField(
        required=False, help_text="Account number; staff users only, who have no key's account."
    )

    def validate_items(self, value):
        """Require a list; each item is checked by the service against its job type."""
        if not isinstance(value, list):
            raise serializers.ValidationError("Must be a list of item objects.")
        return value


class BatchChangeSerializer(StrictSerializer):
    """The body of PATCH batches/{id}/: what may change while a batch is open or running."""

    # See BatchCreateSerializer.label.
    label = StrictCharField(required=False, allow_blank=True, max_length=200)  # type: ignore[assignment]
    metadata = JSONObjectField(required=False, help_text="Replaces the batch's metadata.")
    priority = priority_field()
    max_concurrency = max_concurrency_field()
    deadline = deadline_field()

    # The batch's other writable fields, refused with a reason rather than as unknown.
    FIXED = ("id", "type", "options", "items", "source_url", "commit", "account")

    def validate_deadline(self, value):
        """Refuse a deadline that has already passed."""
        return deadline_check(value)

    def to_internal_value(self, data):
        """Refuse, by name, the fields that are fixed once the batch exists."""
        fixed = sorted(set(data) & set(self.FIXED)) if isinstance(data, Mapping) else []
        if fixed:
            errors = {name: ["Cannot be changed once the batch exists."] for name in fixed}
            if "options" in errors:
                errors["options"] = [
                    "Give priority, max_concurrency or deadline at the top level; "
                    "the other options cannot be changed once the batch exists."
                ]
            raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class RerunSerializer(StrictSerializer):
    """The body of POST batches/{id}/rerun/."""

    items = serializers.ChoiceField(
        choices=["failed", "all"], default="failed", help_text="Which items to run again."
    )


# --- output --------------------------------------------------------------------------------------


class CountsSerializer(serializers.Serializer):
    """Item counters by status."""

    total = serializers.IntegerField()
    pending = serializers.IntegerField()
    queued = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class BatchErrorSerializer(serializers.ModelSerializer):
    """A line that did not become an item, or a batch-level failure."""

    class Meta:
        model = BatchError
        fields = ["index", "external_id", "code", "message", "created_at"]


class BatchSerializer(serializers.ModelSerializer):
    """A batch as listed."""

    account = serializers.IntegerField(source="account.number", read_only=True)
    # A plain string: empty unless the batch was created from a file URL.
    source_url = serializers.CharField(
        read_only=True, help_text="The file of items a worker downloads and reads, or empty."
    )
    options = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()
    paused = serializers.SerializerMethodField()
    progress = serializers.FloatField(read_only=True)
    throughput = serializers.FloatField(
        read_only=True, allow_null=True, help_text="Items per second over the last minute or so."
    )
    estimated_completion = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = Batch
        fields = [
            "id",
            "number",
            "account",
            "type",
            "label",
            "metadata",
            "options",
            "source_url",
            "status",
            "paused",
            "counts",
            "progress",
            "error_count",
            "superseded",
            "created_at",
            "committed_at",
            "started_at",
            "finished_at",
            "throughput",
            "estimated_completion",
            "links",
        ]
        read_only_fields = fields

    @extend_schema_field(BatchOptionsSerializer)
    def get_options(self, batch: Batch) -> dict:
        """Return the batch's failure options."""
        return {
            "stop_on_error": batch.stop_on_error,
            "max_failures": batch.max_failures,
            "atomic": batch.atomic,
            "not_before": batch.not_before,
            "deadline": batch.deadline,
            "retention_days": batch.retention_days,
            "callback_url": batch.callback_url,
            "webhook_events": batch.webhook_events,
            "priority": batch.priority,
            "max_concurrency": batch.max_concurrency,
        }

    def get_paused(self, batch: Batch) -> bool:
        """Return True while workers claim no new chunk of the batch."""
        return batch.paused_at is not None

    @extend_schema_field(CountsSerializer)
    def get_counts(self, batch: Batch) -> dict:
        """Return the item counters."""
        return batch.counts()

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_estimated_completion(self, batch: Batch):
        """Return when the batch should end at its rate so far, or null."""
        return batch.estimated_completion()

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
    def get_links(self, batch: Batch) -> dict[str, str]:
        """Return the URLs of the batch's sub-resources and actions."""
        request = self.context.get("request")
        links = {}
        for name, view in BATCH_LINKS.items():
            path = reverse(view, kwargs={"pk": batch.pk})
            links[name] = request.build_absolute_uri(path) if request else path
        return links


BATCH_LINKS = {
    "self": "api:batch-detail",
    "items": "api:batch-items",
    "results": "api:batch-results",
    "errors": "api:batch-errors",
    "events": "api:batch-events",
    "commit": "api:batch-commit",
    "cancel": "api:batch-cancel",
    "rerun": "api:batch-rerun",
    "pause": "api:batch-pause",
    "resume": "api:batch-resume",
    "upload": "api:batch-upload",
    "export": "api:batch-export",
    "package": "api:batch-package",
    "deliveries": "api:batch-deliveries",
}


class BatchDetailSerializer(BatchSerializer):
    """A batch with its counts per job type and its first errors."""

    counts_by_type = serializers.SerializerMethodField()
    # A wire field named like a Serializer property: DRF's metaclass moves declared fields
    # off the class, so the property stays; mypy sees an override.
    errors = serializers.SerializerMethodField()  # type: ignore[assignment]

    class Meta(BatchSerializer.Meta):
        fields = [*BatchSerializer.Meta.fields, "counts_by_type", "errors"]
        read_only_fields = fields

    @extend_schema_field(
        serializers.DictField(
            child=CountsSerializer(),
            help_text="The item counters of each job type in the batch, shaped as `counts`.",
        )
    )
    def get_counts_by_type(self, batch: Batch) -> dict[str, dict[str, int]]:
        """Return the item counters per job type."""
        return selectors.batch_counts_by_type(batch=batch)

    @extend_schema_field(BatchErrorSerializer(many=True))
    def get_errors(self, batch: Batch) -> list[dict]:
        """Return the batch's first 20 errors."""
        # With many=True this is a ListSerializer, whose data is a list; the stubs type the
        # call as the item serializer.
        return BatchErrorSerializer(batch.errors.order_by("id")[:20], many=True).data  # type: ignore[return-value]


class ItemSerializer(serializers.ModelSerializer):
    """One item with its outcome.

    The result is null while the batch's results are hidden (Batch.results_visible: an
    atomic batch publishes all results or none, once it has finished).
    """

    error = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()

    class Meta:
        model = Item
        fields = [
            "index",
            "external_id",
            "key",
            "type",
            "status",
            "payload",
            "result",
            "error",
            "attempts",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.ANY)
    def get_result(self, item: Item):
        """Return the item's result, or null while its batch's results are hidden."""
        batch = self.context.get("batch") or item.batch
        return item.result if batch.results_visible else None

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    )
    def get_error(self, item: Item):
        """Return the item's error code and message, or null."""
        if not item.error_code:
            return None
        return {"code": item.error_code, "message": item.error_message}


class ItemsAddedSerializer(serializers.Serializer):
    """The answer to POST batches/{id}/items/."""

    added = serializers.IntegerField()
    first_index = serializers.IntegerField()
    last_index = serializers.IntegerField()
    batch = BatchSerializer()


class BatchEventSerializer(serializers.ModelSerializer):
    """One entry of the batch timeline."""

    class Meta:
        model = BatchEvent
        fields = ["kind", "actor", "detail", "request_id", "created_at"]
        read_only_fields = fields


class JobTypeSerializer(serializers.Serializer):
    """A registered job type."""

    name = serializers.CharField()
    description = serializers.CharField()
    payload_schema = serializers.JSONField()
    accepts_file = serializers.BooleanField()
    time_limit = serializers.FloatField(
        help_text="Seconds one attempt at an item may take unless its payload sets time_limit."
    )
    max_time_limit = serializers.FloatField(
        help_text="The most a payload's time_limit may ask for, in seconds."
    )


class ResultsSerializer(serializers.Serializer):
    """Progressive results: what has ended so far, grouped by job type."""

    status = serializers.CharField()
    statuses = serializers.DictField(child=serializers.IntegerField())
    results = serializers.DictField(child=ItemSerializer(many=True))
    next = serializers.CharField(allow_null=True)


class UploadOptionsSerializer(StrictSerializer):
    """Query parameters of POST batches/{id}/upload/."""

    on_error = serializers.ChoiceField(choices=["skip", "reject"], default="skip")
    dry_run = serializers.BooleanField(default=False)
    csv_types = serializers.ChoiceField(choices=["string", "infer"], default="string")
    payload = JSONObjectField(
        required=False,
        binary=True,
        help_text="A JSON object given to every member of a ZIP package as its payload.",
    )


class FileItemSerializer(StrictSerializer):
    """The multipart form of POST items/file/: one file item."""

    file = serializers.FileField()
    external_id = StrictCharField(required=False, max_length=255)
    key = StrictCharField(required=False, max_length=255)
    type = JobTypeNameField(required=False, max_length=100)
    payload = JSONObjectField(
        required=False, binary=True, help_text="The item's payload: a JSON object, as text."
    )


class ApiRootLinksSerializer(serializers.Serializer):
    """Where the API's parts are."""

    batches = serializers.URLField()
    job_types = serializers.URLField()
    account = serializers.URLField()
    schema = serializers.URLField(help_text="This API's OpenAPI document.")
    docs = serializers.URLField(help_text="Its browsable documentation.")


class ApiRootSerializer(serializers.Serializer):
    """The answer to GET /api/v1/: links to the API's parts."""

    links = ApiRootLinksSerializer()
    dialect_schemas = serializers.DictField(
        child=serializers.URLField(),
        help_text="The OpenAPI document of each compat dialect, by name.",
    )


class UploadErrorSerializer(serializers.Serializer):
    """A line, row or member of an upload that did not become an item."""

    index = serializers.IntegerField()
    external_id = serializers.CharField(required=False)
    code = serializers.CharField()
    message = serializers.CharField()


class UploadReportSerializer(serializers.Serializer):
    """The answer to an upload."""

    added = serializers.IntegerField()
    rejected = serializers.IntegerField()
    valid = serializers.IntegerField(help_text="Good lines; with dry_run, what would be added.")
    dry_run = serializers.BooleanField()
    format = serializers.CharField()
    # A wire field named like a Serializer property: DRF's metaclass moves declared fields
    # off the class, so the property stays; mypy sees an override.
    errors = UploadErrorSerializer(many=True)  # type: ignore[assignment]
