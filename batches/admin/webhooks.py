"""Admin for webhook deliveries and their attempts; a person may queue one again."""

from __future__ import annotations

from django.contrib import admin, messages

from batches import webhooks
from batches.admin.common import BatchFilter, ViewOnlyMixin, admin_actor
from batches.models import WebhookAttempt, WebhookDelivery


class WebhookAttemptInline(ViewOnlyMixin, admin.TabularInline):
    model = WebhookAttempt
    fields = ("number", "started_at", "duration_ms", "status_code", "error", "response_excerpt")
    readonly_fields = fields
    ordering = ["number"]
    extra = 0


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "batch_number",
        "event",
        "url",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = [BatchFilter, "event", "status"]
    list_select_related = ["batch"]
    search_fields = ["=id", "url"]
    ordering = ["-created_at"]
    show_full_result_count = False
    fields = (
        "id",
        "batch",
        "event",
        "url",
        "status",
        "attempts",
        "next_attempt_at",
        "give_up_at",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
        "body",
    )
    # All read-only, so no form field is built (a URLField's would warn about its scheme).
    readonly_fields = fields
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    @admin.display(description="batch")
    def batch_number(self, delivery):
        return delivery.batch.number

    @admin.action(description="Redeliver selected deliveries", permissions=["view"])
    def redeliver(self, request, queryset):
        count = 0
        for delivery in queryset:
            webhooks.delivery_redeliver(delivery=delivery, actor=admin_actor(request))
            count += 1
        noun = "delivery" if count == 1 else "deliveries"
        self.message_user(request, f"Queued {count} {noun} again.", messages.SUCCESS)
