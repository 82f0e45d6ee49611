"""An item that runs longer than a lease keeps its chunk: nobody else may run it meanwhile."""

import threading
import time
from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone

from batches import engine, services
from batches.engine import planning
from batches.models import Chunk, Item
from jobs.echo import Echo
from tests.factories import AccountFactory


@pytest.mark.django_db(transaction=True)
def test_lease_keeper__a_slow_item_outlives_its_lease_without_losing_the_chunk(
    settings, monkeypatch
):
    settings.BATCHSITE_LEASE_SECONDS = 1
    started, release = threading.Event(), threading.Event()
    original = Echo.process

    def held(self, payload, file, context):
        # The item runs until the test lets it go, so nothing races a sleep.
        started.set()
        release.wait(30)
        return original(self, payload, file, context)

    monkeypatch.setattr(Echo, "process", held)
    batch, _ = services.batch_create(
        account=AccountFactory(), actor="test", type="echo", items=[{"payload": {"n": 1}}]
    )
    with mock.patch.object(planning, "chunks_enqueue"):
        services.batch_commit(batch=batch, actor="test")
    chunk = Chunk.objects.get(batch=batch)
    outcome = []

    def work():
        try:
            outcome.append(engine.chunk_process(chunk_id=chunk.pk))
        finally:
            connection.close()  # the thread's own session, or the test database stays busy

    worker = threading.Thread(target=work)

    worker.start()
    try:
        assert started.wait(30)
        first_lease_end = Chunk.objects.get(pk=chunk.pk).lease_expires_at
        for _ in range(100):  # until the lease the worker took at the start has run out
            if timezone.now() > first_lease_end:
                break
            time.sleep(0.05)
        assert timezone.now() > first_lease_end
        intruder = engine.chunk_claim(chunk_id=chunk.pk, owner="intruder")
    finally:
        release.set()
        worker.join(30)

    assert intruder is None
    assert outcome == ["done"]
    item = Item.objects.get(batch=batch)
    assert (item.status, item.attempts) == ("succeeded", 1)
