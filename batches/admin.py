"""Django admin registrations for the batch domain."""

from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin

from batches.models import Account, ApiKey, Batch, BatchError, BatchEvent, Chunk, Item


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "number", "is_active", "created_at"]
    search_fields = ["name", "=number"]
    readonly_fields = ["number", "created_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    list_display = [*APIKeyModelAdmin.list_display, "account", "last_used_at"]
    list_filter = [*APIKeyModelAdmin.list_filter, "account"]
    raw_id_fields = ["account"]


class BatchErrorInline(admin.TabularInline):
    model = BatchError
    fields = ["index", "external_id", "code", "message"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    show_change_link = False


class BatchEventInline(admin.TabularInline):
    model = BatchEvent
    fields = ["created_at", "kind", "actor", "detail"]
    readonly_fields = fields
    extra = 0
    max_num = 0


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = [
        "number",
        "id",
        "account",
        "type",
        "label",
        "status",
        "total_items",
        "succeeded_items",
        "failed_items",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "type", "atomic"]
    search_fields = ["=id", "=number", "label"]
    raw_id_fields = ["account"]
    readonly_fields = [
        "id",
        "number",
        "status",
        "ending",
        "superseded",
        "total_items",
        "pending_items",
        "queued_items",
        "running_items",
        "succeeded_items",
        "failed_items",
        "cancelled_items",
        "error_count",
        "last_seq",
        "created_at",
        "committed_at",
        "started_at",
        "finished_at",
    ]
    inlines = [BatchErrorInline, BatchEventInline]


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["batch", "index", "external_id", "type", "status", "attempts", "finished_at"]
    list_filter = ["status", "type"]
    search_fields = ["=external_id"]
    raw_id_fields = ["batch"]
    readonly_fields = [
        "status",
        "result",
        "error_code",
        "error_message",
        "attempts",
        "seq",
        "started_at",
        "finished_at",
        "output_files",
    ]
    show_full_result_count = False


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = [
        "batch",
        "start_index",
        "end_index",
        "status",
        "lease_owner",
        "lease_expires_at",
        "attempts",
    ]
    list_filter = ["status"]
    raw_id_fields = ["batch"]
    readonly_fields = ["status", "lease_owner", "lease_expires_at", "attempts", "finished_at"]
