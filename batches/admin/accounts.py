"""Admin for tenant accounts and their API keys."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html
from rest_framework_api_key.admin import APIKeyModelAdmin

from batches import services
from batches.admin.common import changelist_url, plural
from batches.models import Account, ApiKey, Batch


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
