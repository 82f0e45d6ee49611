"""Call a live server through a client generated from its schema by openapi-python-client.

Run by .ci/generated_client.sh with the generated package installed, as
`python generated_client_smoke.py BASE_URL API_KEY CUSTOM_TYPE`: CUSTOM_TYPE is a job type
that takes a file, which the server registers but the schema the client was generated from
did not name, so the calls that use it show that a new job type needs no new client.
Exits non-zero, saying what was wrong, at the first answer that is not the expected one.
"""

from __future__ import annotations

import sys
import uuid

from batchsite_api_client import AuthenticatedClient, Client
from batchsite_api_client.api.api import api_root
from batchsite_api_client.api.batches import (
    batch_file_item_add,
    batch_item_retrieve,
    batch_items_add,
    batches_create,
)
from batchsite_api_client.api.job_types import job_types_list
from batchsite_api_client.models import (
    ApiRoot,
    BatchCreateRequest,
    BatchDetail,
    FileItemRequest,
    FileItemRequestPayload,
    Item,
    ItemInputRequest,
    ItemInputRequestPayload,
    ItemsAdded,
    Problem,
)
from batchsite_api_client.types import File


def expect(condition: bool, what: str) -> None:
    """Stop the run, saying `what` was expected, unless `condition` holds."""
    if not condition:
        sys.exit(f"generated client smoke test: expected {what}")


def main(base_url: str, key: str, custom_type: str) -> None:
    """Make the calls and check every answer."""
    root = api_root.sync(client=Client(base_url=base_url))
    expect(isinstance(root, ApiRoot), f"GET /api/v1/ without a key to answer links, not {root!r}")
    expect(
        root.links.batches == f"{base_url}/api/v1/batches/", f"the batches link, not {root.links}"
    )

    client = AuthenticatedClient(base_url=base_url, token=key, prefix="Api-Key")
    names = {job_type.name for job_type in job_types_list.sync(client=client) or []}
    expect(custom_type in names, f"{custom_type} among the job types, not {sorted(names)}")

    batch_id = uuid.uuid4()
    body = BatchCreateRequest(id=batch_id, type_=custom_type, label="generated client")
    created = batches_create.sync_detailed(client=client, body=body)
    batch = created.parsed
    expect(created.status_code == 201, f"201 from batches_create, not {created.status_code}")
    expect(isinstance(batch, BatchDetail), f"a batch, not {batch!r}")
    expect(
        (batch.id, batch.type_, batch.status.value) == (batch_id, custom_type, "created"),
        f"the created {custom_type} batch, not {batch!r}",
    )

    items = [
        ItemInputRequest(type_="echo", payload=ItemInputRequestPayload.from_dict({"n": n}))
        for n in (1, 2)
    ]
    added = batch_items_add.sync(str(batch_id), client=client, body=items)
    expect(isinstance(added, ItemsAdded), f"items added, not {added!r}")
    expect((added.added, added.first_index) == (2, 0), f"2 items from index 0, not {added!r}")
    one = batch_items_add.sync(
        str(batch_id),
        client=client,
        body=ItemInputRequest(type_="echo", payload=ItemInputRequestPayload()),
    )
    expect(isinstance(one, ItemsAdded) and one.first_index == 2, f"item 2 added, not {one!r}")

    upload = File(payload=b"hello", file_name="hello.txt", mime_type="text/plain")
    form = FileItemRequest(file=upload, payload=FileItemRequestPayload.from_dict({"n": 3}))
    filed = batch_file_item_add.sync(str(batch_id), client=client, body=form)
    expect(isinstance(filed, ItemsAdded) and filed.first_index == 3, f"a file item, not {filed!r}")
    item = batch_item_retrieve.sync(str(batch_id), 3, client=client)
    expect(
        isinstance(item, Item) and (item.type_, item.payload) == (custom_type, {"n": 3}),
        f"the {custom_type} file item, not {item!r}",
    )

    refused = batches_create.sync_detailed(
        client=client, body=BatchCreateRequest(type_="no.such.type")
    )
    problem = refused.parsed
    expect(refused.status_code == 400, f"400 for an unknown job type, not {refused.status_code}")
    expect(isinstance(problem, Problem) and problem.code == "invalid", f"invalid, not {problem!r}")
    print(
        f"generated client: {len(names)} job types, batch {batch_id} of {custom_type} with 4 items"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
