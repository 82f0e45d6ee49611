"""Every state change of accounts, keys, batches and items: one function per transition.

The functions live in modules by concern and are re-exported here, so callers write
`services.batch_commit(...)`. A test that patches a name must patch it on the module that
uses it (`services.items.INSERT_GROUP`), not on this package.
"""

from __future__ import annotations

# Callers catch these refusals as `services.<Error>`, as they did when this was one module.
from batches.exceptions import BatchFinished, BatchNotCommitted
from batches.services.accounts import account_create, api_key_create, api_key_revoke
from batches.services.common import (
    batch_lock,
    job_types_ready_check,
    sequence_next,
)
from batches.services.items import batch_upload, item_add_file, items_add, items_add_staged
from batches.services.lifecycle import (
    BATCH_CHANGES,
    BATCH_OPTIONS,
    UNCOMMITTED,
    RerunWhich,
    batch_cancel,
    batch_change,
    batch_commit,
    batch_create,
    batch_expire,
    batch_fail,
    batch_ingest_finish,
    batch_pause,
    batch_rerun,
    batch_resume,
)
from batches.services.retention import batch_delete, batch_purge, batches_purge_older

__all__ = [
    "BATCH_CHANGES",
    "BATCH_OPTIONS",
    "UNCOMMITTED",
    "BatchFinished",
    "BatchNotCommitted",
    "RerunWhich",
    "account_create",
    "api_key_create",
    "api_key_revoke",
    "batch_cancel",
    "batch_change",
    "batch_commit",
    "batch_create",
    "batch_delete",
    "batch_expire",
    "batch_fail",
    "batch_ingest_finish",
    "batch_lock",
    "batch_pause",
    "batch_purge",
    "batch_rerun",
    "batch_resume",
    "batch_upload",
    "batches_purge_older",
    "item_add_file",
    "items_add",
    "items_add_staged",
    "job_types_ready_check",
    "sequence_next",
]
