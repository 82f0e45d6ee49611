"""Python client for the batchsite batch processing API.

from batchsite_client import Client

with Client("http://127.0.0.1:8000", "KEY") as client:
    batch = client.create_batch(type="echo")
    client.add_items(batch, ({"payload": {"n": n}} for n in range(50_000)))
    client.commit(batch)
    client.wait(batch, progress="tqdm")
    for item in client.iter_results(batch):
        print(item["index"], item["status"], item["result"])
"""

from batchsite_client.client import DEFAULT_TIMEOUT, UNSET, VERSION, Client
from batchsite_client.errors import (
    AuthenticationFailed,
    BatchAlreadyCommitted,
    BatchEmpty,
    BatchExists,
    BatchFinished,
    BatchNotFinished,
    BatchNotOpen,
    BatchsiteError,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServerError,
    Throttled,
    TooLarge,
    UnsupportedMediaType,
    WaitTimeout,
)
from batchsite_client.types import TERMINAL_STATUSES, Batch, Counts, Item, ItemsAdded, UploadReport

__version__ = VERSION

__all__ = [
    "DEFAULT_TIMEOUT",
    "TERMINAL_STATUSES",
    "UNSET",
    "AuthenticationFailed",
    "Batch",
    "BatchAlreadyCommitted",
    "BatchEmpty",
    "BatchExists",
    "BatchFinished",
    "BatchNotFinished",
    "BatchNotOpen",
    "BatchsiteError",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Counts",
    "InvalidRequest",
    "Item",
    "ItemsAdded",
    "NotFound",
    "PermissionDenied",
    "ServerError",
    "Throttled",
    "TooLarge",
    "UnsupportedMediaType",
    "UploadReport",
    "WaitTimeout",
]
