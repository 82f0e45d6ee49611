"""An item that runs longer than a lease keeps its chunk: nobody else may run it meanwhile."""

import threading
import time
from unittest import mock

import pytest

from batches import engine, services
from batches.engine import planning
from batches.models import Chunk, Item
from tests.factories import AccountFactory


@pytest.mark.django_db(transaction=True)
def test_lease_keeper__a_slow_item_outlives_its_lease_without_losing_the_chunk(settings):
    settings.BATCHSITE_LEASE_SECONDS = 1
    batch, _ = services.batch_create(
        account=AccountFactory(), actor="test", items=[{"payload": {"sleep_ms": 2500}}]
    )
    with mock.patch.object(planning, "chunks_enqueue"):
        services.batch_commit(batch=batch, actor="test")
    chunk = Chunk.objects.get(batch=batch)
    outcome = []
    worker = threading.Thread(
        target=lambda: outcome.append(engine.chunk_process(chunk_id=chunk.pk))
    )

    worker.start()
    time.sleep(1.8)  # well past the 1 s lease, while the item still sleeps
    intruder = engine.chunk_claim(chunk_id=chunk.pk, owner="intruder")
    worker.join()

    assert intruder is None
    assert outcome == ["done"]
    item = Item.objects.get(batch=batch)
    assert (item.status, item.attempts) == ("succeeded", 1)
