"""Django admin for the batch domain: look at everything, change state only through services.

Status and counters belong to the engine, so they are read-only everywhere and a saved
batch writes only the few fields a person may edit. Actions call the services and report
refused transitions as warnings. Tables that grow with items (items, errors, chunks) are
view-only and avoid whole-table work: no full result counts, no facets, no DISTINCT
filters, orderings that follow an index.
"""

from __future__ import annotations

import json
import uuid

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import Q, Sum
from django.forms.models import BaseInlineFormSet
from django.urls import reverse
from django.utils.formats import localize
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import Truncator
from rest_framework_api_key.admin import APIKeyModelAdmin

from batches import services, timeline, webhooks
from batches.exceptions import BatchNotFinished, DomainError, NotFound
from batches.models import (
    Account,
    ApiKey,
    Batch,
    BatchError,
    BatchEvent,
    Chunk,
    Item,
    Lock,
    Sequence,
    WebhookAttempt,
    WebhookDelivery,
)
from batches.selectors import batch_get_by_reference
from jobs import job_types

ERRORS_INLINE_LIMIT = 50
# What an item's result and output files show while its batch keeps them hidden.
RESULTS_HIDDEN = "hidden: an atomic batch shows its results only once it has finished"
EVENTS_INLINE_LIMIT = 100


def admin_actor(request) -> str:
    """Name the admin user for the batch timeline."""
    return f"admin:{request.user.get_username()}"


def plural(count: int, noun: str) -> str:
    """Return e.g. "1 batch" or "3 batches"."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith("ch") else f"{count} {noun}s"


def changelist_url(model, **params) -> str:
    """Return the admin changelist URL of `model`, filtered by `params`."""
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"{url}?{query}" if query else url


class ViewOnlyMixin:
    """Show rows without letting anyone add, change or delete them by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class BatchFilter(admin.SimpleListFilter):
    """Filter rows of one batch (`?batch=<uuid or number>`); shown only while in use.

    Listing every batch as a choice would not scale, so batches link here instead.
    """

    title = "batch"
    parameter_name = "batch"

    def lookups(self, request, model_admin):
        # Only filters with choices are applied, so an unknown batch gets one too.
        if self.value() is None:
            return []
        batch = self._batch()
        return [(self.value(), str(batch) if batch else "no such batch")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        batch = self._batch()
        return queryset.filter(batch_id=batch.pk) if batch else queryset.none()

    def _batch(self) -> Batch | None:
        if not hasattr(self, "_found"):
            value = self.value()
            self._found = batch_get_by_reference(reference=value) if value else None
        return self._found


class JobTypeFilter(admin.SimpleListFilter):
    """Filter by job type, listing the registered types rather than querying for them."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted(job_types())]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


class ItemCountPaginator(Paginator):
    """Count all items from the batch counters instead of a COUNT(*) over every item row.

    The counters equal the item rows at every commit (they move in the same transaction),
    so the sum is exact; filtered lists are counted normally, through an index.
    """

    @cached_property
    def count(self):
        # The admin pages a QuerySet; django-stubs types object_list as any sliceable sequence.
        if not self.object_list.query.has_filters():  # type: ignore[attr-defined]
            return Batch.objects.aggregate(total=Sum("total_items"))["total"] or 0
        return super().count


# --- accounts and keys --------------------------------------------------------------------------


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "number", "is_active", "created_at", "batches_link"]
    list_filter = ["is_active"]
    search_fields = ["name", "=number"]
    readonly_fields = ["number", "created_at"]
    ordering = ["number"]

    @admin.display(description="batches")
    def batches_link(self, account):
        url = changelist_url(Batch, account__id__exact=account.pk)
        return format_html('<a href="{}">batches</a>', url)

    def has_delete_permission(self, request, obj=None):
        # Deleting an account drops all its batches through the ORM collector, item by
        # item; deactivate it instead, and purge its batches with the services.
        return False

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=[f for f in form.changed_data if f in ("name", "is_active")])
            return
        created = services.account_create(name=obj.name)
        obj.pk, obj.number, obj.created_at = created.pk, created.number, created.created_at
        if not obj.is_active:
            obj.save(update_fields=["is_active"])


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    # rest_framework_api_key's admin is untyped: mypy takes its tuples for fixed-length ones.
    list_display = [*APIKeyModelAdmin.list_display, "account", "last_used_at"]  # type: ignore[assignment]
    list_filter = ["revoked", "account", *APIKeyModelAdmin.list_filter]  # type: ignore[assignment]
    search_fields = [*APIKeyModelAdmin.search_fields, "account__name"]  # type: ignore[assignment]
    list_select_related = ["account"]
    autocomplete_fields = ["account"]
    actions = ["revoke_keys"]

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        count = 0
        for key in queryset.filter(revoked=False):
            services.api_key_revoke(key=key)
            count += 1
        self.message_user(request, f"Revoked {plural(count, 'API key')}.", messages.SUCCESS)


# --- batches -------------------------------------------------------------------------------------


class LimitedInlineFormSet(BaseInlineFormSet):
    """An inline formset showing only the first `limit` related rows."""

    limit = 50

    def get_queryset(self):
        if not hasattr(self, "_limited"):
            self._limited = super().get_queryset()[: self.limit]
        return self._limited


class ErrorsFormSet(LimitedInlineFormSet):
    limit = ERRORS_INLINE_LIMIT


class EventsFormSet(LimitedInlineFormSet):
    limit = EVENTS_INLINE_LIMIT


class BatchErrorInline(ViewOnlyMixin, admin.TabularInline):
    model = BatchError
    formset = ErrorsFormSet
    verbose_name_plural = f"errors (the first {ERRORS_INLINE_LIMIT})"
    fields = ("index", "external_id", "code", "message")
    readonly_fields = fields
    ordering = ["id"]
    extra = 0


class BatchEventInline(ViewOnlyMixin, admin.TabularInline):
    model = BatchEvent
    formset = EventsFormSet
    verbose_name_plural = f"events (the latest {EVENTS_INLINE_LIMIT})"
    fields = ("created_at", "kind", "actor", "detail")
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    extra = 0


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = [
        "number",
        "short_id",
        "account",
        "type",
        "label",
        "status",
        "progress_percent",
        "items_link",
        "succeeded_items",
        "failed_items",
        "created_at",
        "finished_at",
    ]
    list_display_links = ["number", "short_id"]
    list_filter = ["status", JobTypeFilter, "account", "atomic", "superseded"]
    list_select_related = ["account"]
    search_fields = ["label"]
    search_help_text = "A batch id (UUID), a batch number, part of a label, or an account name."
    # `number` rises with creation and is unique: an indexed, deterministic order.
    ordering = ["-number"]
    show_full_result_count = False
    # What a person may change; everything else is the engine's or fixed at creation.
    editable_fields = ["label", "metadata", "retention_days", "priority"]
    fieldsets = [
        (None, {"fields": ["id", "number", "account", "type", "label", "metadata"]}),
        (
            "State",
            {
                "fields": [
                    "status",
                    "ending",
                    "paused_at",
                    "superseded",
                    "progress_percent",
                    "items_link",
                    "errors_link",
                    "events_link",
                ]
            },
        ),
        (
            "Counters",
            {
                "fields": [
                    "total_items",
                    "pending_items",
                    "queued_items",
                    "running_items",
                    "succeeded_items",
                    "failed_items",
                    "cancelled_items",
                    "error_count",
                ]
            },
        ),
        (
            "Options",
            {
                "fields": [
                    "stop_on_error",
                    "max_failures",
                    "atomic",
                    "not_before",
                    "deadline",
                    "retention_days",
                    "priority",
                    "max_concurrency",
                    "callback_url",
                    "source_url",
                    "commit_on_ingest",
                ]
            },
        ),
        ("Times", {"fields": ["created_at", "committed_at", "started_at", "finished_at"]}),
    ]
    inlines = [BatchErrorInline, BatchEventInline]
    actions = [
        "cancel_batches",
        "pause_batches",
        "resume_batches",
        "rerun_failed_items",
        "purge_batches",
    ]

    def get_readonly_fields(self, request, obj=None):
        editable = set(self.editable_fields)
        fields = [
            name
            for _, options in self.fieldsets
            for name in options["fields"]
            if name not in editable
        ]
        return fields

    def has_add_permission(self, request):
        # A batch gets its number and first event in services.batch_create: create it
        # through the API or `manage.py createbatch`.
        return False

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            pass
        matches = Q(label__icontains=term) | Q(account__name__iexact=term)
        if term.isdigit():
            matches |= Q(number=int(term))
        return queryset.filter(matches), False

    @admin.display(description="id")
    def short_id(self, batch):
        return str(batch.pk)[:8]

    @admin.display(description="progress")
    def progress_percent(self, batch):
        return f"{batch.progress:.0%}"

    @admin.display(description="items")
    def items_link(self, batch):
        url = changelist_url(Item, batch=batch.pk)
        return format_html('<a href="{}">{} items</a>', url, localize(batch.total_items))

    @admin.display(description="errors")
    def errors_link(self, batch):
        url = changelist_url(BatchError, batch=batch.pk)
        return format_html('<a href="{}">{} errors</a>', url, localize(batch.error_count))

    @admin.display(description="events")
    def events_link(self, batch):
        return format_html('<a href="{}">timeline</a>', changelist_url(BatchEvent, batch=batch.pk))

    def save_model(self, request, obj, form, change):
        # Write only what the person changed: a full save would put back status and
        # counters as they were when the form was loaded, undoing the workers' writes.
        changed = [name for name in form.changed_data if name in self.editable_fields]
        if changed:
            obj.save(update_fields=changed)
            timeline.event_record(
                batch=obj, kind="edited", actor=admin_actor(request), detail={"fields": changed}
            )

    def get_deleted_objects(self, objs, request):
        # Listing every item of a large batch on the confirmation page would not finish.
        batches = list(objs)
        items = sum(batch.total_items for batch in batches)
        summary = [f"{batch} with {plural(batch.total_items, 'item')}" for batch in batches]
        counts = {"batches": len(batches), "items": items}
        return summary, counts, set(), []

    def delete_model(self, request, obj):
        services.batch_delete(batch=obj, actor=admin_actor(request))

    def delete_queryset(self, request, queryset):
        for batch in queryset:
            services.batch_delete(batch=batch, actor=admin_actor(request))

    def get_actions(self, request):
        actions = super().get_actions(request)
        # "Purge" deletes ended batches through the services; no bulk delete of live ones.
        actions.pop("delete_selected", None)
        return actions

    def _apply(self, request, queryset, transition, done: str) -> int:
        count = 0
        for batch in queryset.order_by("number"):
            try:
                transition(batch)
            except DomainError as exc:
                self.message_user(request, f"Batch {batch.number}: {exc.message}", messages.WARNING)
            else:
                count += 1
        if count:
            self.message_user(request, f"{done} {plural(count, 'batch')}.", messages.SUCCESS)
        return count

    @admin.action(description="Cancel selected batches", permissions=["change"])
    def cancel_batches(self, request, queryset):
        actor = admin_actor(request)
        self._apply(
            request,
            queryset,
            lambda batch: services.batch_cancel(batch=batch, actor=actor),
            "Cancelled",
        )

    @admin.action(description="Pause selected batches", permissions=["change"])
    def pause_batches(self, request, queryset):
        actor = admin_actor(request)
        self._apply(
            request,
            queryset,
            lambda batch: services.batch_pause(batch=batch, actor=actor),
            "Paused",
        )

    @admin.action(description="Resume selected batches", permissions=["change"])
    def resume_batches(self, request, queryset):
        actor = admin_actor(request)
        self._apply(
            request,
            queryset,
            lambda batch: services.batch_resume(batch=batch, actor=actor),
            "Resumed",
        )

    @admin.action(description="Rerun the failed items of selected batches", permissions=["change"])
    def rerun_failed_items(self, request, queryset):
        actor = admin_actor(request)
        self._apply(
            request,
            queryset,
            lambda batch: services.batch_rerun(batch=batch, which="failed", actor=actor),
            "Queued the failed items of",
        )

    @admin.action(description="Purge selected ended batches", permissions=["delete"])
    def purge_batches(self, request, queryset):
        actor = admin_actor(request)

        def purge(batch):
            if services.batch_purge(batch=batch, actor=actor):
                return
            status = Batch.objects.filter(pk=batch.pk).values_list("status", flat=True).first()
            if status is None:
                raise NotFound("batch was deleted meanwhile")
            raise BatchNotFinished(
                f"batch is {status}; only an ended batch can be purged (cancel it first)"
            )

        self._apply(request, queryset, purge, "Purged")


@admin.register(Item)
class ItemAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = [
        "index",
        "batch_number",
        "external_id",
        "type",
        "status",
        "attempts",
        "error_code",
        "finished_at",
    ]
    list_filter = [BatchFilter, "status", JobTypeFilter]
    list_select_related = ["batch"]
    search_fields = ["=external_id"]
    search_help_text = "An exact external id, or an item index."
    # The unique (batch, index) index; the model's default order would join the batches.
    ordering = ["batch_id", "index"]
    sortable_by = ()
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = ItemCountPaginator
    readonly_fields = [
        "batch",
        "index",
        "external_id",
        "key",
        "type",
        "status",
        "payload",
        "input_file",
        "shown_result",
        "shown_output_files",
        "error_code",
        "error_message",
        "attempts",
        "seq",
        "started_at",
        "finished_at",
    ]
    # Only these, so the raw result and output files never show beside their guarded copies.
    fields = tuple(readonly_fields)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match and match.url_name == "batches_item_changelist":
            # A page of the list shows none of the JSON and text columns, which can be large.
            queryset = queryset.defer("payload", "result", "output_files", "error_message")
        return queryset

    def get_search_results(self, request, queryset, search_term):
        # Exact, case-sensitive matches only: iexact and icontains cannot use an index.
        term = search_term.strip()
        if not term:
            return queryset, False
        matches = Q(external_id=term)
        if term.isdigit():
            matches |= Q(index=int(term))
        return queryset.filter(matches), False

    @admin.display(description="batch")
    def batch_number(self, item):
        url = reverse("admin:batches_batch_change", args=[item.batch_id])
        return format_html('<a href="{}">{}</a>', url, item.batch.number)

    @admin.display(description="result")
    def shown_result(self, item):
        if not item.batch.results_visible:
            return RESULTS_HIDDEN
        return None if item.result is None else json.dumps(item.result, ensure_ascii=False)

    @admin.display(description="output files")
    def shown_output_files(self, item):
        if not item.batch.results_visible:
            return RESULTS_HIDDEN
        return json.dumps(item.output_files, ensure_ascii=False) if item.output_files else None


@admin.register(BatchError)
class BatchErrorAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ["batch_number", "index", "external_id", "code", "short_message", "created_at"]
    list_filter = [BatchFilter, "code"]
    list_select_related = ["batch"]
    search_fields = ["=external_id", "=code"]
    ordering = ["batch_id", "id"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    raw_id_fields = ["batch", "item"]

    @admin.display(description="batch")
    def batch_number(self, error):
        return error.batch.number

    @admin.display(description="message")
    def short_message(self, error):
        return Truncator(error.message).chars(120)


@admin.register(BatchEvent)
class BatchEventAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ["created_at", "batch_number", "kind", "actor"]
    list_filter = [BatchFilter, "kind"]
    list_select_related = ["batch"]
    search_fields = ["=actor", "=kind"]
    ordering = ["-id"]
    show_full_result_count = False
    raw_id_fields = ["batch"]

    @admin.display(description="batch")
    def batch_number(self, event):
        return event.batch.number


@admin.register(Chunk)
class ChunkAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "batch_number",
        "start_index",
        "end_index",
        "status",
        "attempts",
        "lease_owner",
        "lease_expires_at",
        "enqueued_at",
        "finished_at",
    ]
    list_filter = [BatchFilter, "status"]
    list_select_related = ["batch"]
    search_fields = ["=lease_owner"]
    ordering = ["-id"]
    show_full_result_count = False
    raw_id_fields = ["batch"]

    @admin.display(description="batch")
    def batch_number(self, chunk):
        return chunk.batch.number


# --- webhooks ------------------------------------------------------------------------------------


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
    list_filter = [BatchFilter, "status"]
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


# --- internals -----------------------------------------------------------------------------------


@admin.register(Lock)
class LockAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ["name", "owner", "expires_at"]
    search_fields = ["name", "owner"]


@admin.register(Sequence)
class SequenceAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ["name", "last"]
    search_fields = ["name"]
