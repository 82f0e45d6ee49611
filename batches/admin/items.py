"""Admin for the rows a batch grows: items, errors, events and chunks, all view-only.

These tables grow with items, so they avoid whole-table work: no full result counts, no
facets, no DISTINCT filters, orderings that follow an index.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Q, Sum
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import Truncator

from batches.admin.common import BatchFilter, JobTypeFilter, ViewOnlyMixin
from batches.models import Batch, BatchError, BatchEvent, Chunk, Item

# What an item's result and output files show while its batch keeps them hidden.
RESULTS_HIDDEN = "hidden: an atomic batch shows its results only once it has finished"


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
