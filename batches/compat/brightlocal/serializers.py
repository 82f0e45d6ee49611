"""BrightLocal's parameters and answers, with the hyphenated names its batch API uses."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batches.models import Batch, Item

# batchsite state -> the five batch states BrightLocal documents.
BATCH_STATUSES: dict[str, str] = {
    Batch.Status.CREATED: "Created",
    Batch.Status.INGESTING: "Created",
    Batch.Status.OPEN: "Created",
    Batch.Status.COMMITTED: "Committed",
    Batch.Status.RUNNING: "Running",
    Batch.Status.CANCELLING: "Running",
    Batch.Status.FINALIZING: "Running",
    Batch.Status.STOPPED: "Stopped",
    Batch.Status.FAILED: "Stopped",
    Batch.Status.CANCELLED: "Stopped",
    Batch.Status.EXPIRED: "Stopped",
    Batch.Status.FINISHED: "Finished",
}

# batchsite item state -> BrightLocal's job states; a cancelled job never ran, so it failed.
JOB_STATUSES: dict[str, str] = {
    Item.Status.PENDING: "Pending",
    Item.Status.QUEUED: "Queued",
    Item.Status.RUNNING: "Processing",
    Item.Status.FAILED: "Failed",
    Item.Status.CANCELLED: "Failed",
    Item.Status.SUCCEEDED: "Completed",
}

BATCH_STATUS_NAMES = ["Created", "Committed", "Running", "Stopped", "Finished"]
JOB_STATUS_NAMES = ["Pending", "Queued", "Processing", "Failed", "Completed"]


class BrightLocalHyphenatedSerializer(serializers.Serializer):
    """Name every field with hyphens for underscores: `batch_id` is read and shown as `batch-id`."""

    def get_fields(self):
        """Return the declared fields under their hyphenated names."""
        return {name.replace("_", "-"): field for name, field in super().get_fields().items()}


# --- parameters ---------------------------------------------------------------------------------


class BrightLocalBatchCreateParams(BrightLocalHyphenatedSerializer):
    """Parameters of `POST batch`."""

    stop_on_job_error = serializers.ChoiceField(
        choices=["0", "1"],
        default="0",
        help_text="1 stops the batch when a job fails; its unstarted jobs then fail too.",
    )


class BrightLocalBatchParams(BrightLocalHyphenatedSerializer):
    """Parameters naming one batch: `PUT`, `GET` and `DELETE batch`."""

    batch_id = serializers.IntegerField(help_text="The batch-id `POST batch` answered.")


class BrightLocalJobAddParams(BrightLocalHyphenatedSerializer):
    """Parameters of `POST batch/jobs`; every other field is the job's own parameter."""

    batch_id = serializers.IntegerField(help_text="The batch to add the job to.")
    job_type = serializers.CharField(help_text="A batchsite job type, e.g. `echo`.")


# --- answers ------------------------------------------------------------------------------------


class BrightLocalSuccessSerializer(serializers.Serializer):
    """`{"success": true}`."""

    success = serializers.BooleanField()


class BrightLocalFailureSerializer(serializers.Serializer):
    """Every failure: `success` false and an object of error keys (or parameter names)."""

    success = serializers.BooleanField()
    # A wire field named like a Serializer property: DRF's metaclass moves declared fields
    # off the class, so the property stays; mypy sees an override.
    errors = serializers.DictField(child=serializers.CharField())  # type: ignore[assignment]


class BrightLocalBatchCreatedSerializer(BrightLocalHyphenatedSerializer):
    """The answer to `POST batch`."""

    success = serializers.BooleanField()
    batch_id = serializers.CharField()


class BrightLocalJobAddedSerializer(BrightLocalHyphenatedSerializer):
    """The answer to `POST batch/jobs`."""

    success = serializers.BooleanField()
    job_id = serializers.IntegerField()


class BrightLocalJobResultSerializer(BrightLocalHyphenatedSerializer):
    """One job of a batch as `GET batch` lists it; its job-id is the item's global id.

    The context names the job's `batch`.
    """

    results = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    job_id = serializers.IntegerField(source="pk")

    @extend_schema_field(serializers.ListField(child=serializers.JSONField()))
    def get_results(self, item: Item) -> list:
        """Return the job's result in a list, as BrightLocal does, or [] while it has none.

        The context's batch says whether results may be shown yet (Batch.results_visible).
        """
        if item.result is None or not self.context["batch"].results_visible:
            return []
        return [item.result]

    @extend_schema_field(serializers.ChoiceField(choices=JOB_STATUS_NAMES))
    def get_status(self, item: Item) -> str:
        """Return the job's state in BrightLocal's words."""
        return JOB_STATUSES[item.status]


class BrightLocalBatchResultsSerializer(serializers.Serializer):
    """The answer to `GET batch`: the jobs so far, grouped by job type, and a histogram."""

    success = serializers.BooleanField()
    status = serializers.ChoiceField(choices=BATCH_STATUS_NAMES)
    results = serializers.DictField(child=BrightLocalJobResultSerializer(many=True))
    statuses = serializers.DictField(child=serializers.IntegerField())
