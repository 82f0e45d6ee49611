"""The moving-window item rate behind `throughput` and `estimated_completion`."""

from datetime import timedelta

import pytest
from django.utils import timezone

from batches.engine import rate_window_changes
from batches.models import Batch
from tests.factories import BatchFactory


def write(batch: Batch, *, items: int, at) -> Batch:
    """Record `items` outcomes written at `at`, as a worker's slice write does."""
    Batch.objects.filter(pk=batch.pk).update(
        last_seq=batch.last_seq + items,
        last_outcome_at=at,
        succeeded_items=batch.succeeded_items + items,
        queued_items=batch.queued_items - items,
    )
    window = Batch.objects.values("rate_from_at", "rate_mid_at").get(pk=batch.pk)
    ended = Batch.objects.get(pk=batch.pk).ended_items
    Batch.objects.filter(pk=batch.pk).update(
        **rate_window_changes(window=window, ended=ended, now=at)
    )
    return Batch.objects.get(pk=batch.pk)


@pytest.fixture
def running(db, settings):
    settings.BATCHSITE_RATE_WINDOW_SECONDS = 60
    return BatchFactory(status=Batch.Status.RUNNING, total_items=10_000, queued_items=10_000)


def test_throughput__none_until_a_second_of_writes(running):
    start = timezone.now()

    batch = write(running, items=500, at=start)
    assert batch.throughput is None
    assert batch.estimated_completion() is None

    batch = write(batch, items=500, at=start + timedelta(milliseconds=500))
    assert batch.throughput is None


def test_throughput__is_the_rate_since_the_window_start(running):
    start = timezone.now() - timedelta(seconds=10)
    batch = write(running, items=500, at=start)

    batch = write(batch, items=1000, at=start + timedelta(seconds=10))

    assert batch.throughput == pytest.approx(100.0)
    remaining = 10_000 - 1500
    eta = batch.estimated_completion()
    expected = timezone.now() + timedelta(seconds=remaining / 100)
    assert abs((eta - expected).total_seconds()) < 5


def test_throughput__forgets_what_is_older_than_the_window(running):
    start = timezone.now() - timedelta(seconds=200)
    batch = write(running, items=1, at=start)
    # Fast at first: 5,000 items in 10 s ...
    batch = write(batch, items=5000, at=start + timedelta(seconds=10))
    # ... then slow for two minutes: 10 items every 30 s.
    for step in range(1, 5):
        batch = write(batch, items=10, at=start + timedelta(seconds=10 + 30 * step))

    # The window now starts after the fast phase, so the rate is the slow one.
    assert batch.throughput == pytest.approx(10 / 30, rel=0.01)


def test_estimated_completion__only_while_running(running):
    start = timezone.now() - timedelta(seconds=5)
    batch = write(running, items=100, at=start)
    batch = write(batch, items=100, at=start + timedelta(seconds=5))
    assert batch.estimated_completion() is not None

    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.FINISHED)
    batch.refresh_from_db()

    assert batch.estimated_completion() is None
