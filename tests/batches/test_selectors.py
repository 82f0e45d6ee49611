"""Tests for batches.selectors: counts per job type and the job types of a batch's items."""

from __future__ import annotations

import io

from batches import selectors, services
from batches.models import Batch, Item
from tests.factories import open_batch

# Echo items 0, 1 (failing) and 3, and a test.flaky item 2.
MIXED = [
    {"payload": {"n": 0}},
    {"payload": {"n": 1, "fail": True}},
    {"type": "test.flaky", "payload": {"n": 2}},
    {"payload": {"n": 3}},
]


def counts(**given: int) -> dict[str, int]:
    """Return a `counts` shape holding the given statuses, zero elsewhere, and their total."""
    statuses = dict.fromkeys(Item.Status.values, 0) | given
    return {"total": sum(statuses.values()), **statuses}


def test_batch_counts_by_type__mixed_batch_before_commit_and_after_it_ends(
    account, django_capture_on_commit_callbacks
):
    batch = open_batch(account=account, items=MIXED)

    before = selectors.batch_counts_by_type(batch=batch)
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_commit(batch=batch, actor="test")
    batch.refresh_from_db()
    after = selectors.batch_counts_by_type(batch=batch)

    assert before == {"echo": counts(pending=3), "test.flaky": counts(pending=1)}
    assert after == {"echo": counts(succeeded=2, failed=1), "test.flaky": counts(succeeded=1)}
    assert batch.status == Batch.Status.FINISHED


def test_batch_counts_by_type__single_type_batch_is_its_counters_without_a_query(
    account, django_assert_num_queries
):
    batch = open_batch(account=account, items=5)

    with django_assert_num_queries(0):
        by_type = selectors.batch_counts_by_type(batch=batch)

    assert by_type == {"echo": batch.counts()} == {"echo": counts(pending=5)}


def test_batch_counts_by_type__items_all_of_another_type_than_the_batch(account):
    batch = open_batch(account=account, items=[{"type": "test.flaky", "payload": {}}] * 2)

    assert selectors.batch_counts_by_type(batch=batch) == {"test.flaky": counts(pending=2)}


def test_batch_counts_by_type__batch_without_items_has_none(account, django_assert_num_queries):
    batch, _ = services.batch_create(account=account, actor="test")

    with django_assert_num_queries(0):
        assert selectors.batch_counts_by_type(batch=batch) == {}


def test_batch_item_types__every_type_or_those_in_some_statuses(
    account, django_capture_on_commit_callbacks
):
    mixed = open_batch(account=account, items=MIXED)
    single = open_batch(account=account, items=2)
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_commit(batch=mixed, actor="test")

    assert selectors.batch_item_types(batch=mixed) == {"echo", "test.flaky"}
    assert selectors.batch_item_types(batch=mixed, statuses=["failed"]) == {"echo"}
    assert selectors.batch_item_types(batch=single) == {"echo"}
    assert selectors.batch_item_types(batch=single, statuses=["failed"]) == set()


def test_batch_counts_by_type__an_upload_of_several_types_marks_the_batch_mixed(account):
    batch = open_batch(account=account, items=1)
    lines = b'{"payload": {"n": 1}}\n{"type": "test.flaky", "payload": {"n": 2}}\n'

    services.batch_upload(
        batch=batch,
        stream=io.BytesIO(lines),
        content_type="application/x-ndjson",
        content_length=len(lines),
        actor="test",
    )
    batch.refresh_from_db()

    assert batch.item_types_mixed
    assert selectors.batch_counts_by_type(batch=batch) == {
        "echo": counts(pending=2),
        "test.flaky": counts(pending=1),
    }
