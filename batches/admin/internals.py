"""Admin for the engine's own bookkeeping: leases and sequences, view-only."""

from __future__ import annotations

from django.contrib import admin

from batches.admin.common import ViewOnlyMixin
from batches.models import Lock, Sequence


@admin.register(Lock)
class LockAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ["name", "owner", "expires_at"]
    search_fields = ["name", "owner"]


@admin.register(Sequence)
class SequenceAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ["name", "last"]
    search_fields = ["name"]
