"""Admin for batches: edit the few fields a person may, act on state through the services.

Status and counters belong to the engine, so they are read-only and a saved batch writes
only the fields a person may edit. Actions call the services and report refused
transitions as warnings.
"""

from __future__ import annotations

import uuid
from typing import cast

from django.contrib import admin, messages
from django.db.models import Q
from django.forms.models import BaseInlineFormSet
from django.utils.formats import localize
from django.utils.html import format_html

from batches import services, timeline
from batches.admin.common import JobTypeFilter, ViewOnlyMixin, admin_actor, changelist_url, plural
from batches.exceptions import BatchNotFinished, DomainError, NotFound
from batches.models import Batch, BatchError, BatchEvent, BatchQuerySet, Item

ERRORS_INLINE_LIMIT = 50
EVENTS_INLINE_LIMIT = 100


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
                    "webhook_events",
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

    def get_queryset(self, request):
        """Read each batch with its chunks' unfolded counter moves, for its progress."""
        return cast(BatchQuerySet, super().get_queryset(request)).with_unfolded_counts()

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
