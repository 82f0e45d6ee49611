"""A batch's timeline and its webhook deliveries, with each attempt at one."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class BatchEvent(models.Model):
    """One entry in a batch's timeline: who or what did what, and when."""

    batch = models.ForeignKey("batches.Batch", on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=40)
    actor = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    # The X-Request-ID of the request that did it, or of the one a worker acted for.
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["batch", "created_at", "id"]
        indexes = [models.Index(fields=["batch", "created_at"], name="event_batch_created")]

    def __str__(self) -> str:
        return f"{self.kind} by {self.actor or 'system'}"


class WebhookDelivery(models.Model):
    """One event posted to a batch's callback_url, retried until it lands or the window ends."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    batch = models.ForeignKey("batches.Batch", on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    url = models.URLField(max_length=2000)
    # The exact bytes sent (as text), so every attempt and redelivery carries the same body.
    body = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When the next attempt is due; while an attempt runs it is pushed ahead like a lease.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Retries stop after this; a redelivery opens a new window.
    give_up_at = models.DateTimeField()
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_status_due"),
            models.Index(fields=["batch", "-created_at"], name="delivery_batch_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.url} ({self.status})"


class WebhookAttempt(models.Model):
    """One try at posting a delivery, with what the receiver answered."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    # The start of the receiver's answer, for operators to see why it refused.
    response_excerpt = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error[:40]}"


class WebhookProgress(models.Model):
    """When a batch's last `batch.progress` delivery was made: one row per subscribed batch.

    Workers take turns through a conditional update of this row, so the batch's own row is
    never written for progress deliveries.
    """

    batch = models.OneToOneField(
        "batches.Batch", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook progress"

    def __str__(self) -> str:
        return f"progress of {self.batch_id} sent at {self.sent_at}"
