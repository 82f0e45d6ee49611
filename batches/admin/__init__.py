"""Django admin for the batch domain: look at everything, change state only through services.

Django autodiscovers this package; importing each module registers its ModelAdmins.
"""

from __future__ import annotations

from batches.admin.accounts import AccountAdmin, ApiKeyAdmin
from batches.admin.batches import BatchAdmin
from batches.admin.internals import LockAdmin, SequenceAdmin
from batches.admin.items import BatchErrorAdmin, BatchEventAdmin, ChunkAdmin, ItemAdmin
from batches.admin.webhooks import WebhookDeliveryAdmin

__all__ = [
    "AccountAdmin",
    "ApiKeyAdmin",
    "BatchAdmin",
    "BatchErrorAdmin",
    "BatchEventAdmin",
    "ChunkAdmin",
    "ItemAdmin",
    "LockAdmin",
    "SequenceAdmin",
    "WebhookDeliveryAdmin",
]
