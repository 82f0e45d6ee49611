"""The shapes of the API's JSON answers, as typed dictionaries (the JSON is returned as is)."""

from __future__ import annotations

from typing import Any, TypedDict

#: Batch states after which nothing changes unless the batch is rerun.
TERMINAL_STATUSES = frozenset({"finished", "stopped", "cancelled", "failed", "expired"})


class Counts(TypedDict):
    """Item counters of a batch by status."""

    total: int
    pending: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class Batch(TypedDict, total=False):
    """A batch as GET batches/{id}/ answers it (a listed batch lacks the last two keys)."""

    id: str
    number: int
    account: int
    type: str
    label: str
    metadata: dict[str, Any]
    options: dict[str, Any]
    source_url: str
    status: str
    paused: bool
    counts: Counts
    progress: float
    error_count: int
    superseded: bool
    created_at: str
    committed_at: str | None
    started_at: str | None
    finished_at: str | None
    throughput: float | None
    estimated_completion: str | None
    links: dict[str, str]
    counts_by_type: dict[str, Counts]
    errors: list[dict[str, Any]]


class ItemError(TypedDict):
    """Why an item failed."""

    code: str
    message: str


class Item(TypedDict, total=False):
    """One item with its outcome (`result` is null while an atomic batch runs)."""

    index: int
    external_id: str
    key: str
    type: str
    status: str
    payload: dict[str, Any]
    result: Any
    error: ItemError | None
    attempts: int
    started_at: str | None
    finished_at: str | None


class ItemsAdded(TypedDict):
    """The answer to adding items: how many and their index range."""

    added: int
    first_index: int
    last_index: int
    batch: Batch


class UploadReport(TypedDict, total=False):
    """The answer to an upload: items added, lines rejected and why."""

    added: int
    rejected: int
    valid: int
    dry_run: bool
    format: str
    errors: list[dict[str, Any]]
