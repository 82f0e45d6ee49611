"""The accounts page: every account with its batch count and API keys."""

from __future__ import annotations

from django.db.models import Count, Prefetch, QuerySet

from batches.models import Account, ApiKey


def accounts_with_keys() -> QuerySet[Account]:
    """Return every account with its batch count and its keys, newest key first."""
    return Account.objects.annotate(batch_count=Count("batches")).prefetch_related(
        Prefetch("api_keys", queryset=ApiKey.objects.order_by("-created"))
    )
