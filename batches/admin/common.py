"""What the admin modules share: the actor name, links, filters and view-only tables."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse

from batches.models import Batch
from batches.selectors import batch_get_by_reference
from jobs import job_types


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
