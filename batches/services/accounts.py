"""Create tenant accounts and issue and revoke their API keys."""

from __future__ import annotations

from typing import cast

from django.db import transaction

from batches.exceptions import Conflict, InvalidInput
from batches.models import Account, ApiKey
from batches.services.common import sequence_next


@transaction.atomic
def account_create(*, name: str) -> Account:
    """Create a tenant account with the next account number."""
    name = name.strip()
    if not name:
        raise InvalidInput("an account needs a name")
    if Account.objects.filter(name=name).exists():
        raise Conflict(f"an account named {name!r} exists already", code="account_exists")
    return Account.objects.create(name=name, number=sequence_next("account"))


def api_key_create(*, account: Account, name: str = "default") -> tuple[ApiKey, str]:
    """Create an API key for the account; return it and the raw key, which is never stored."""
    key, raw = ApiKey.objects.create_key(account=account, name=name[:50] or "default")
    # The library's manager is typed for AbstractAPIKey; ApiKey's manager makes ApiKeys.
    return cast(ApiKey, key), raw


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key; requests made with it fail from now on."""
    key.revoked = True
    key.save(update_fields=["revoked"])
    return key
