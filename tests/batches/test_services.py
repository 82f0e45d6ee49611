"""Tests for batches.services: every transition from each state it allows, and refusals."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from batches import engine, services
from batches.exceptions import (
    BatchAlreadyCommitted,
    BatchEmpty,
    BatchExists,
    BatchFinished,
    BatchNotFinished,
    BatchNotOpen,
    Conflict,
    InvalidInput,
    NotFound,
)
from batches.models import Account, ApiKey, Batch, BatchError, BatchEvent, Chunk, Item
from tests.factories import BatchFactory, open_batch
from tests.helpers import assert_counters_exact, kinds, statuses
from tests.helpers.files import batch_files_dir

S = Batch.Status


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _long_slices(settings):
    # Slices end by size, never by the clock, so slice boundaries are deterministic.
    settings.BATCHSITE_SLICE_SECONDS = 3600


@pytest.fixture
def committed(account, django_capture_on_commit_callbacks):
    """Create and commit a batch without running it; return (batch, on_commit callbacks)."""

    def make(items=3, *, type=None, **options):
        objs = items if isinstance(items, list) else [{"payload": {"n": n}} for n in range(items)]
        with django_capture_on_commit_callbacks() as callbacks:
            batch, _ = services.batch_create(
                account=account, actor="test", type=type, items=objs, options=options, commit=True
            )
        return batch, callbacks

    return make


# --- accounts and keys --------------------------------------------------------------------------


def test_account_create__numbers_are_unique_and_increasing(db):
    first = services.account_create(name="first")
    second = services.account_create(name="  second  ")

    assert second.number > first.number
    assert second.name == "second"


def test_account_create__duplicate_name_is_refused(db):
    services.account_create(name="acme")

    with pytest.raises(Conflict) as caught:
        services.account_create(name="acme")

    assert caught.value.code == "account_exists"
    assert Account.objects.filter(name="acme").count() == 1


def test_account_create__blank_name_is_refused(db):
    with pytest.raises(InvalidInput):
        services.account_create(name="   ")

    assert not Account.objects.exists()


def test_account_api_key__raw_key_authenticates_until_revoked(account):
    key, raw = services.api_key_create(account=account, name="ci")

    assert ApiKey.objects.get_from_key(raw).account == account
    services.api_key_revoke(key=key)
    assert not ApiKey.objects.is_valid(raw)


# --- batch_create -------------------------------------------------------------------------------


def test_batch_create__new_batch_is_created_with_an_event(account, settings):
    batch, created = services.batch_create(
        account=account, actor="alice", label="first", metadata={"k": "v"}
    )

    assert created is True
    batch.refresh_from_db()
    assert batch.status == S.CREATED
    assert batch.type == settings.BATCHSITE_DEFAULT_JOB_TYPE
    assert (batch.label, batch.metadata, batch.account) == ("first", {"k": "v"}, account)
    assert kinds(batch) == ["created"]
    assert BatchEvent.objects.get(batch=batch).actor == "alice"


def test_batch_create__numbers_are_unique_and_increasing(account):
    first, _ = services.batch_create(account=account, actor="test")
    second, _ = services.batch_create(account=account, actor="test")

    assert second.number > first.number


def test_batch_create__same_client_id_from_same_account_returns_the_existing_batch(account):
    client_id = uuid.uuid4()
    first, created_first = services.batch_create(
        account=account, actor="test", id=client_id, label="original"
    )

    again, created_again = services.batch_create(
        account=account,
        actor="test",
        id=client_id,
        label="changed",
        items=[{"payload": {}}],
        commit=True,
    )

    assert (created_first, created_again) == (True, False)
    assert again.pk == first.pk == client_id
    again.refresh_from_db()
    assert again.label == "original"
    assert again.status == S.CREATED
    assert Batch.objects.count() == 1
    assert not Item.objects.exists()
    assert kinds(again) == ["created"]


def test_batch_create__client_id_of_another_account_is_batch_exists(account, other_account):
    client_id = uuid.uuid4()
    services.batch_create(account=account, actor="test", id=client_id)

    with pytest.raises(BatchExists) as caught:
        services.batch_create(account=other_account, actor="test", id=client_id)

    assert caught.value.code == "batch_exists"
    assert Batch.objects.get(pk=client_id).account == account


def test_batch_create__unknown_type_is_refused(account):
    with pytest.raises(InvalidInput, match="unknown job type") as caught:
        services.batch_create(account=account, actor="test", type="no.such.type")

    assert caught.value.errors[0]["field"] == "type"
    assert not Batch.objects.exists()


def test_batch_create__unknown_option_is_refused(account):
    with pytest.raises(InvalidInput, match="colour"):
        services.batch_create(account=account, actor="test", options={"colour": "blue"})

    assert not Batch.objects.exists()


def test_batch_create__options_are_stored(account):
    batch, _ = services.batch_create(
        account=account,
        actor="test",
        options={"stop_on_error": True, "max_failures": 4, "atomic": True},
    )

    batch.refresh_from_db()
    assert (batch.stop_on_error, batch.max_failures, batch.atomic) == (True, 4, True)


def test_batch_create__items_and_commit_in_one_call(account, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        batch, created = services.batch_create(
            account=account,
            actor="test",
            items=[{"payload": {"n": 0}}, {"external_id": "b", "payload": {"n": 1}}],
            commit=True,
        )

    assert created is True
    assert len(callbacks) == 1
    batch = assert_counters_exact(batch)
    assert batch.status == S.COMMITTED
    assert batch.committed_at is not None
    assert statuses(batch) == ["queued", "queued"]
    assert Item.objects.get(batch=batch, index=1).external_id == "b"
    assert Chunk.objects.filter(batch=batch, status=Chunk.Status.QUEUED).count() == 1
    assert kinds(batch) == ["created", "items_added", "committed"]


def test_batch_create__one_bad_item_creates_nothing_at_all(account):
    with pytest.raises(InvalidInput) as caught:
        services.batch_create(
            account=account,
            actor="test",
            items=[{"payload": {}}, {"payload": {"fail": "yes"}}, {"payload": {}}],
            commit=True,
        )

    assert [error["index"] for error in caught.value.errors] == [1]
    assert not Batch.objects.exists()
    assert not Item.objects.exists()
    assert not BatchEvent.objects.exists()
    assert not Chunk.objects.exists()


def test_batch_create__commit_without_items_is_refused_and_creates_nothing(account):
    with pytest.raises(BatchEmpty):
        services.batch_create(account=account, actor="test", commit=True)

    assert not Batch.objects.exists()


# --- items_add ----------------------------------------------------------------------------------


def test_items_add__first_items_open_a_created_batch(account):
    batch, _ = services.batch_create(account=account, actor="test")

    created = services.items_add(
        batch=batch, items=[{"payload": {"a": 1}}, {"payload": {"a": 2}}], actor="bob"
    )

    assert list(created) == [0, 1]
    batch = assert_counters_exact(batch)
    assert batch.status == S.OPEN
    assert (batch.total_items, batch.pending_items) == (2, 2)
    assert statuses(batch) == ["pending", "pending"]
    assert kinds(batch) == ["created", "items_added"]
    assert BatchEvent.objects.get(batch=batch, kind="items_added").detail == {"count": 2}


def test_items_add__indexes_continue_across_calls(account):
    batch = open_batch(account=account, items=3)

    services.items_add(batch=batch, items=[{"payload": {"n": 3}}], actor="test")
    services.items_add(batch=batch, items=[{"payload": {"n": 4}}, {"payload": {"n": 5}}], actor="t")

    rows = list(Item.objects.filter(batch=batch).values_list("index", "payload"))
    assert rows == [(n, {"n": n}) for n in range(6)]
    batch = assert_counters_exact(batch)
    assert batch.status == S.OPEN
    assert kinds(batch) == ["created", "items_added", "items_added", "items_added"]


def test_items_add__item_type_defaults_to_the_batch_type(account):
    batch, _ = services.batch_create(account=account, actor="test", type="test.flaky")

    services.items_add(
        batch=batch, items=[{"payload": {}}, {"type": "echo", "payload": {}}], actor="test"
    )

    types = list(Item.objects.filter(batch=batch).values_list("type", flat=True))
    assert types == ["test.flaky", "echo"]


def test_items_add__one_bad_item_adds_none(account):
    batch = open_batch(account=account, items=2)

    with pytest.raises(InvalidInput) as caught:
        services.items_add(
            batch=batch,
            items=[{"payload": {}}, {"payload": {}}, {"external_id": "x", "payload": []}],
            actor="test",
        )

    assert [(e["index"], e.get("external_id")) for e in caught.value.errors] == [(2, "x")]
    batch = assert_counters_exact(batch)
    assert batch.total_items == 2
    assert kinds(batch) == ["created", "items_added"]


def test_items_add__bad_item_in_a_created_batch_leaves_it_created(account):
    batch, _ = services.batch_create(account=account, actor="test")

    with pytest.raises(InvalidInput):
        services.items_add(batch=batch, items=[{"nope": 1}], actor="test")

    batch.refresh_from_db()
    assert batch.status == S.CREATED
    assert not Item.objects.exists()


def test_items_add__empty_list_is_refused(account):
    batch = open_batch(account=account, items=1)

    with pytest.raises(InvalidInput, match="no items"):
        services.items_add(batch=batch, items=[], actor="test")


def test_items_add__refused_after_commit(committed):
    batch, _ = committed(2)

    with pytest.raises(BatchNotOpen):
        services.items_add(batch=batch, items=[{"payload": {}}], actor="test")

    assert assert_counters_exact(batch).total_items == 2


def test_items_add__refused_after_cancel(account):
    batch = open_batch(account=account, items=2)
    services.batch_cancel(batch=batch, actor="test")

    with pytest.raises(BatchNotOpen):
        services.items_add(batch=batch, items=[{"payload": {}}], actor="test")

    assert Item.objects.filter(batch=batch).count() == 2


@pytest.mark.parametrize("status", sorted(set(S.values) - Batch.ACCEPTS_ITEMS))
def test_items_add__refused_in_every_state_but_created_and_open(status, db):
    batch = BatchFactory(status=status)

    with pytest.raises(BatchNotOpen):
        services.items_add(batch=batch, items=[{"payload": {}}], actor="test")

    assert not Item.objects.filter(batch=batch).exists()


def test_items_add__per_request_limit(account, settings):
    settings.BATCHSITE_MAX_ITEMS_PER_REQUEST = 3
    batch = open_batch(account=account, items=3)

    with pytest.raises(InvalidInput, match="limit is 3"):
        services.items_add(batch=batch, items=[{"payload": {}}] * 4, actor="test")

    assert assert_counters_exact(batch).total_items == 3


def test_items_add__per_batch_limit(account, settings):
    settings.BATCHSITE_MAX_ITEMS_PER_BATCH = 5
    batch = open_batch(account=account, items=3)

    with pytest.raises(InvalidInput, match="at most 5"):
        services.items_add(batch=batch, items=[{"payload": {}}] * 3, actor="test")
    services.items_add(batch=batch, items=[{"payload": {}}] * 2, actor="test")

    assert assert_counters_exact(batch).total_items == 5


def test_items_add__deleted_batch_is_not_found(account):
    batch = open_batch(account=account, items=1)
    services.batch_delete(batch=batch, actor="test")

    with pytest.raises(NotFound):
        services.items_add(batch=batch, items=[{"payload": {}}], actor="test")


# --- batch_commit -------------------------------------------------------------------------------


def test_batch_commit__empty_batch_is_refused(account):
    batch, _ = services.batch_create(account=account, actor="test")

    with pytest.raises(BatchEmpty, match="no items"):
        services.batch_commit(batch=batch, actor="test")

    batch.refresh_from_db()
    assert batch.status == S.CREATED
    assert kinds(batch) == ["created"]


def test_batch_commit__second_commit_is_refused(committed):
    batch, _ = committed(2)

    with pytest.raises(BatchAlreadyCommitted):
        services.batch_commit(batch=batch, actor="test")

    assert kinds(batch).count("committed") == 1
    assert Chunk.objects.filter(batch=batch).count() == 1


def test_batch_commit__queues_pending_items(account, django_capture_on_commit_callbacks):
    batch = open_batch(account=account, items=4)

    with django_capture_on_commit_callbacks():
        returned = services.batch_commit(batch=batch, actor="carol")

    assert returned.status == S.COMMITTED
    batch = assert_counters_exact(batch)
    assert batch.status == S.COMMITTED
    assert batch.committed_at is not None
    assert (batch.pending_items, batch.queued_items) == (0, 4)
    assert statuses(batch) == ["queued"] * 4
    event = BatchEvent.objects.get(batch=batch, kind="committed")
    assert (event.actor, event.detail) == ("carol", {"chunks": 1})


def test_batch_commit__chunks_follow_the_job_type_chunk_size(committed):
    # test.flaky has chunk_size 100; echo has 5000.
    flaky, _ = committed([{"payload": {}}] * 250, type="test.flaky")
    echo, _ = committed(7)

    ranges = list(
        Chunk.objects.filter(batch=flaky).values_list("start_index", "end_index", "status")
    )
    assert ranges == [(0, 100, "queued"), (100, 200, "queued"), (200, 300, "queued")]
    assert list(Chunk.objects.filter(batch=echo).values_list("start_index", "end_index")) == [
        (0, 5000)
    ]
    assert BatchEvent.objects.get(batch=flaky, kind="committed").detail == {"chunks": 3}


def test_batch_commit__chunks_are_enqueued_only_on_commit(
    account, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(
        "django_q.tasks.async_task", lambda func, *args, **kwargs: sent.append((func, args))
    )
    batch, _ = services.batch_create(
        account=account, actor="test", type="test.flaky", items=[{"payload": {}}] * 150
    )

    with django_capture_on_commit_callbacks() as callbacks:
        services.batch_commit(batch=batch, actor="test")
        assert sent == []

    assert sent == []
    for callback in callbacks:
        callback()
    chunk_ids = list(Chunk.objects.filter(batch=batch).values_list("pk", flat=True))
    assert len(chunk_ids) == 2
    assert sent == [(engine.CHUNK_TASK, (chunk_id,)) for chunk_id in chunk_ids]


@pytest.mark.parametrize(
    ("status", "committed_at", "error"),
    [
        (S.INGESTING, False, BatchNotOpen),
        (S.COMMITTED, True, BatchAlreadyCommitted),
        (S.RUNNING, True, BatchAlreadyCommitted),
        (S.CANCELLING, True, BatchAlreadyCommitted),
        (S.FINALIZING, True, BatchAlreadyCommitted),
        (S.FINISHED, True, BatchAlreadyCommitted),
        (S.STOPPED, True, BatchAlreadyCommitted),
        (S.FAILED, True, BatchAlreadyCommitted),
        (S.CANCELLED, True, BatchAlreadyCommitted),
        (S.CANCELLED, False, BatchFinished),
        (S.EXPIRED, False, BatchFinished),
    ],
)
def test_batch_commit__refused_in_every_state_but_open(status, committed_at, error, db):
    batch = BatchFactory(status=status, committed_at=timezone.now() if committed_at else None)

    with pytest.raises(error):
        services.batch_commit(batch=batch, actor="test")

    batch.refresh_from_db()
    assert batch.status == status
    assert not Chunk.objects.filter(batch=batch).exists()
    assert not BatchEvent.objects.filter(batch=batch).exists()


# --- batch_cancel -------------------------------------------------------------------------------


def test_batch_cancel__open_batch_is_cancelled_directly(account):
    batch = open_batch(account=account, items=3)

    returned = services.batch_cancel(batch=batch, actor="dave")

    assert returned.status == S.CANCELLED
    batch = assert_counters_exact(batch)
    assert batch.status == S.CANCELLED
    assert batch.finished_at is not None
    assert statuses(batch) == ["cancelled"] * 3
    assert not Item.objects.filter(batch=batch, finished_at__isnull=True).exists()
    assert kinds(batch) == ["created", "items_added", "cancelled"]
    assert BatchEvent.objects.get(batch=batch, kind="cancelled").actor == "dave"


def test_batch_cancel__created_batch_is_cancelled_directly(account):
    batch, _ = services.batch_create(account=account, actor="test")

    services.batch_cancel(batch=batch, actor="test")

    batch.refresh_from_db()
    assert batch.status == S.CANCELLED
    assert kinds(batch) == ["created", "cancelled"]


def test_batch_cancel__committed_batch_with_no_running_chunk_is_cancelled_at_once(committed):
    batch, _ = committed(3)

    services.batch_cancel(batch=batch, actor="test")

    batch = assert_counters_exact(batch)
    assert batch.status == S.CANCELLED
    assert batch.ending == ""
    assert batch.finished_at is not None
    assert statuses(batch) == ["cancelled"] * 3
    assert set(Chunk.objects.filter(batch=batch).values_list("status", flat=True)) == {"done"}
    assert kinds(batch) == ["created", "items_added", "committed", "cancel_requested", "cancelled"]
    # The task queued at commit arrives later and finds nothing to do.
    chunk = Chunk.objects.get(batch=batch)
    assert engine.chunk_process(chunk_id=chunk.pk) == "not claimable"
    assert assert_counters_exact(batch).cancelled_items == 3


def test_batch_cancel__claimed_chunk_makes_it_cancelling_and_its_worker_finishes_it(committed):
    batch, _ = committed(3)
    chunk = engine.chunk_claim(chunk_id=Chunk.objects.get(batch=batch).pk, owner="worker-1")

    services.batch_cancel(batch=batch, actor="test")

    batch = assert_counters_exact(batch)
    assert batch.status == S.CANCELLING
    assert batch.ending == S.CANCELLED
    assert kinds(batch)[-1] == "cancel_requested"

    assert engine.ChunkRunner(chunk=chunk, owner="worker-1").run() == "done"

    batch = assert_counters_exact(batch)
    assert batch.status == S.CANCELLED
    assert statuses(batch) == ["cancelled"] * 3
    assert Chunk.objects.get(pk=chunk.pk).status == Chunk.Status.DONE
    assert kinds(batch)[-2:] == ["cancel_requested", "cancelled"]


def test_batch_cancel__running_batch_goes_cancelling_and_the_worker_ends_it(
    ran, account, flaky_hooks
):
    seen = {}

    def cancel_mid_slice():
        batch = Batch.objects.get(account=account)
        seen["before"] = batch.status
        seen["returned"] = services.batch_cancel(batch=batch, actor="erin").status
        seen["after"] = Batch.objects.get(pk=batch.pk).status

    flaky_hooks["cancel"] = cancel_mid_slice
    items = [{"payload": {"hook": "cancel"} if n == 3 else {}} for n in range(30)]

    batch = ran(items, type="test.flaky")

    assert seen == {"before": S.RUNNING, "returned": S.CANCELLING, "after": S.CANCELLING}
    batch = assert_counters_exact(batch)
    assert batch.status == S.CANCELLED
    # The item in flight (3) completes; the worker starts no item after it.
    assert statuses(batch) == ["succeeded"] * 4 + ["cancelled"] * 26
    assert kinds(batch) == [
        "created",
        "items_added",
        "committed",
        "started",
        "cancel_requested",
        "cancelled",
    ]


def test_batch_cancel__is_idempotent_while_cancelling(committed):
    batch, _ = committed(2)
    engine.chunk_claim(chunk_id=Chunk.objects.get(batch=batch).pk, owner="worker-1")
    services.batch_cancel(batch=batch, actor="test")
    events_before = kinds(batch)

    again = services.batch_cancel(batch=batch, actor="test")

    assert again.status == S.CANCELLING
    assert kinds(batch) == events_before


@pytest.mark.parametrize("status", sorted(Batch.TERMINAL | {S.FINALIZING}))
def test_batch_cancel__refused_once_the_batch_has_ended(status, db):
    batch = BatchFactory(status=status)

    with pytest.raises(BatchFinished):
        services.batch_cancel(batch=batch, actor="test")

    batch.refresh_from_db()
    assert batch.status == status
    assert not BatchEvent.objects.filter(batch=batch).exists()


def test_batch_cancel__finished_batch_is_refused(ran):
    batch = ran(2)

    with pytest.raises(BatchFinished):
        services.batch_cancel(batch=batch, actor="test")

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["succeeded", "succeeded"]


# --- batch_rerun --------------------------------------------------------------------------------


def test_batch_rerun__failed_requeues_only_failed_items(ran, django_capture_on_commit_callbacks):
    batch = ran([{"payload": {"n": 0}}, {"payload": {"fail": True}}, {"payload": {"n": 2}}])
    assert batch.status == S.FINISHED
    old_chunks = set(Chunk.objects.filter(batch=batch).values_list("pk", flat=True))

    with django_capture_on_commit_callbacks() as callbacks:
        returned = services.batch_rerun(batch=batch, which="failed", actor="frank")

    assert returned.status == S.COMMITTED
    assert len(callbacks) == 1
    batch = assert_counters_exact(batch)
    assert (batch.status, batch.started_at, batch.finished_at) == (S.COMMITTED, None, None)
    assert statuses(batch) == ["succeeded", "queued", "succeeded"]
    rerun = Item.objects.get(batch=batch, index=1)
    assert (rerun.result, rerun.error_code, rerun.error_message) == (None, "", "")
    assert (rerun.attempts, rerun.seq, rerun.finished_at) == (0, None, None)
    assert Item.objects.get(batch=batch, index=0).result == {"n": 0}
    new_chunks = set(Chunk.objects.filter(batch=batch).values_list("pk", flat=True))
    assert new_chunks
    assert not new_chunks & old_chunks
    assert kinds(batch)[-1] == "rerun"
    assert BatchEvent.objects.get(batch=batch, kind="rerun").detail == {
        "items": "failed",
        "count": 1,
    }

    for callback in callbacks:
        callback()

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["succeeded", "failed", "succeeded"]
    assert Item.objects.get(batch=batch, index=1).attempts == 1
    assert kinds(batch)[-3:] == ["rerun", "started", "finished"]


def test_batch_rerun__all_requeues_every_item(ran, django_capture_on_commit_callbacks):
    batch = ran([{"payload": {"n": 0}}, {"payload": {"fail": True}}])

    with django_capture_on_commit_callbacks(execute=True):
        services.batch_rerun(batch=batch, which="all", actor="test")

    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert statuses(batch) == ["succeeded", "failed"]
    assert BatchEvent.objects.get(batch=batch, kind="rerun").detail == {"items": "all", "count": 2}
    assert kinds(batch).count("finished") == 2


def test_batch_rerun__failed_in_an_atomic_batch_also_reruns_discarded_items(
    ran, django_capture_on_commit_callbacks
):
    batch = ran([{"payload": {}}, {"payload": {"fail": True}}, {"payload": {}}], atomic=True)
    assert batch.status == S.FAILED
    assert statuses(batch) == ["cancelled", "failed", "cancelled"]

    with django_capture_on_commit_callbacks():
        services.batch_rerun(batch=batch, which="failed", actor="test")

    batch = assert_counters_exact(batch)
    assert statuses(batch) == ["queued"] * 3
    assert BatchEvent.objects.get(batch=batch, kind="rerun").detail["count"] == 3


def test_batch_rerun__failed_in_a_plain_batch_leaves_cancelled_items(
    ran, django_capture_on_commit_callbacks
):
    items = [{"payload": {"crash": True} if n == 0 else {}} for n in range(15)]
    batch = ran(items, type="test.flaky", stop_on_error=True)
    assert batch.status == S.STOPPED

    with django_capture_on_commit_callbacks():
        services.batch_rerun(batch=batch, which="failed", actor="test")

    batch = assert_counters_exact(batch)
    assert statuses(batch) == ["queued"] + ["cancelled"] * 14


@pytest.mark.parametrize("status", sorted(set(S.values) - Batch.TERMINAL))
def test_batch_rerun__refused_before_the_batch_has_ended(status, db):
    batch = BatchFactory(status=status)

    with pytest.raises(BatchNotFinished):
        services.batch_rerun(batch=batch, which="all", actor="test")

    batch.refresh_from_db()
    assert batch.status == status


def test_batch_rerun__nothing_failed_is_refused(ran):
    batch = ran(2)

    with pytest.raises(Conflict) as caught:
        services.batch_rerun(batch=batch, which="failed", actor="test")

    assert caught.value.code == "nothing_to_rerun"
    batch = assert_counters_exact(batch)
    assert batch.status == S.FINISHED
    assert "rerun" not in kinds(batch)


# --- batch_delete -------------------------------------------------------------------------------


def test_batch_delete__removes_items_errors_events_chunks_and_files(
    ran, account, django_capture_on_commit_callbacks
):
    batch = ran([{"payload": {}}, {"payload": {"fail": True}}])
    keep = ran(1)
    failed = Item.objects.get(batch=batch, index=1)
    BatchError.objects.create(batch=batch, item=failed, index=1, code="x", message="bad")
    BatchError.objects.create(batch=keep, index=0, code="y", message="kept")
    files = batch_files_dir(batch.pk)
    files.mkdir(parents=True)
    (files / "out.txt").write_text("x")

    with django_capture_on_commit_callbacks(execute=True):
        services.batch_delete(batch=batch, actor="test")

    assert not Batch.objects.filter(pk=batch.pk).exists()
    for model in (Item, BatchError, BatchEvent, Chunk):
        assert not model.objects.filter(batch_id=batch.pk).exists(), model
    assert not files.exists()
    assert Item.objects.filter(batch=keep).count() == 1
    assert BatchError.objects.filter(batch=keep).count() == 1
    assert kinds(keep)[-1] == "finished"


def test_batch_delete__open_batch_is_removed(account):
    batch = open_batch(account=account, items=2)

    services.batch_delete(batch=batch, actor="test")

    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert not Item.objects.exists()
    with pytest.raises(NotFound):
        services.batch_commit(batch=batch, actor="test")


def test_batch_delete__second_delete_is_not_found(account):
    batch = open_batch(account=account, items=1)
    services.batch_delete(batch=batch, actor="test")

    with pytest.raises(NotFound):
        services.batch_delete(batch=batch, actor="test")


# --- batch_purge --------------------------------------------------------------------------------


def ended_ago(batch: Batch, **delta) -> Batch:
    Batch.objects.filter(pk=batch.pk).update(finished_at=timezone.now() - timedelta(**delta))
    return Batch.objects.get(pk=batch.pk)


def test_batch_purge__ended_batch_is_deleted(ran):
    batch = ran(2)

    assert services.batch_purge(batch=batch, actor="test") is True

    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert not Item.objects.filter(batch_id=batch.pk).exists()


@pytest.mark.parametrize("status", [S.OPEN, S.COMMITTED, S.RUNNING, S.CANCELLING, S.FINALIZING])
def test_batch_purge__batch_that_has_not_ended_is_kept(account, status):
    batch = open_batch(account=account, items=2)
    Batch.objects.filter(pk=batch.pk).update(status=status)

    assert services.batch_purge(batch=batch, actor="test") is False

    assert Batch.objects.filter(pk=batch.pk, status=status).exists()
    assert Item.objects.filter(batch=batch).count() == 2


def test_batch_purge__batch_rerun_since_it_was_read_is_kept(ran):
    stale = ran([{"payload": {}}, {"payload": {"fail": True}}])
    services.batch_rerun(batch=stale, which="failed", actor="test")

    assert stale.is_terminal
    assert services.batch_purge(batch=stale, actor="test") is False

    assert Batch.objects.get(pk=stale.pk).status == S.COMMITTED


def test_batch_purge__deleted_batch_is_not_deleted_twice(ran):
    batch = ran(1)
    services.batch_delete(batch=batch, actor="test")

    assert services.batch_purge(batch=batch, actor="test") is False


def test_batch_purge__finished_before_keeps_a_batch_that_ended_later(ran):
    old, recent = ended_ago(ran(1), days=3), ended_ago(ran(1), hours=1)
    cutoff = timezone.now() - timedelta(days=1)

    purged = [
        services.batch_purge(batch=b, actor="t", finished_before=cutoff) for b in (old, recent)
    ]

    assert purged == [True, False]
    assert Batch.objects.filter(pk=recent.pk).exists()


def test_batch_purge__retention_at_follows_the_batchs_own_retention(ran, settings):
    settings.BATCHSITE_RETENTION_DAYS = 30
    default = ended_ago(ran(1), days=31)
    longer = ended_ago(ran(1, retention_days=60), days=31)
    shorter = ended_ago(ran(1, retention_days=1), days=2)
    forever = ended_ago(ran(1), days=31)
    Batch.objects.filter(pk=forever.pk).update(retention_days=Batch.MAX_RETENTION_DAYS + 1)
    now = timezone.now()

    purged = [
        services.batch_purge(batch=batch, actor="test", retention_at=now)
        for batch in (default, longer, shorter, forever)
    ]

    assert purged == [True, False, True, False]


# --- counters -----------------------------------------------------------------------------------


def test_transitions__counters_always_equal_a_recount(account, django_capture_on_commit_callbacks):
    batch = open_batch(account=account, items=4)
    assert_counters_exact(batch)
    services.items_add(batch=batch, items=[{"payload": {"fail": True}}], actor="test")
    assert_counters_exact(batch)
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_commit(batch=batch, actor="test")
    batch = assert_counters_exact(batch)
    assert (batch.succeeded_items, batch.failed_items) == (4, 1)
    with django_capture_on_commit_callbacks() as callbacks:
        services.batch_rerun(batch=batch, which="failed", actor="test")
    assert_counters_exact(batch)
    services.batch_cancel(batch=batch, actor="test")
    batch = assert_counters_exact(batch)
    assert (batch.succeeded_items, batch.cancelled_items) == (4, 1)
    assert len(callbacks) == 1


def test_batch_cancel__stale_lease_does_not_block_a_cancel(committed):
    batch, _ = committed(2)
    chunk = Chunk.objects.get(batch=batch)
    engine.chunk_claim(chunk_id=chunk.pk, owner="dead-worker")
    Chunk.objects.filter(pk=chunk.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=5))

    services.batch_cancel(batch=batch, actor="test")

    # A dead worker's chunk still counts as running; its successor ends the batch.
    batch.refresh_from_db()
    assert batch.status == S.CANCELLING
    assert engine.chunk_process(chunk_id=chunk.pk) == "done"
    batch = assert_counters_exact(batch)
    assert batch.status == S.CANCELLED


# --- not_before and batch_expire ----------------------------------------------------------------


def test_batch_commit__not_before_in_the_future_enqueues_nothing(
    account, django_capture_on_commit_callbacks
):
    later = timezone.now() + timedelta(hours=1)

    with django_capture_on_commit_callbacks() as callbacks:
        batch, _ = services.batch_create(
            account=account,
            actor="test",
            items=[{"payload": {}}],
            options={"not_before": later},
            commit=True,
        )

    assert callbacks == []
    batch = assert_counters_exact(batch)
    assert batch.status == S.COMMITTED
    assert Chunk.objects.get(batch=batch).enqueued_at is None


def test_batch_commit__not_before_in_the_past_enqueues_at_once(
    account, django_capture_on_commit_callbacks
):
    earlier = timezone.now() - timedelta(minutes=1)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        batch, _ = services.batch_create(
            account=account,
            actor="test",
            items=[{"payload": {}}],
            options={"not_before": earlier},
            commit=True,
        )

    assert len(callbacks) == 1
    assert assert_counters_exact(batch).status == S.FINISHED


def test_batch_expire__open_batch_expires_at_once(account):
    batch = open_batch(account=account, items=2)

    returned = services.batch_expire(batch=batch, actor="sweep", reason="left open")

    assert returned.status == S.EXPIRED
    batch = assert_counters_exact(batch)
    assert batch.status == S.EXPIRED
    assert batch.finished_at is not None
    assert statuses(batch) == ["cancelled", "cancelled"]
    assert kinds(batch)[-1] == "expired"
    assert BatchEvent.objects.get(batch=batch, kind="expired").detail == {"reason": "left open"}


def test_batch_expire__committed_batch_winds_down_to_expired(committed):
    batch, _ = committed(3)

    services.batch_expire(batch=batch, actor="sweep", reason="its deadline passed")

    batch = assert_counters_exact(batch)
    assert batch.status == S.EXPIRED
    assert statuses(batch) == ["cancelled"] * 3
    assert kinds(batch)[-2:] == ["stop_requested", "expired"]
    detail = BatchEvent.objects.get(batch=batch, kind="stop_requested").detail
    assert detail == {"ending": "expired", "reason": "its deadline passed"}


def test_batch_expire__running_batch_keeps_finished_outcomes(ran, account, flaky_hooks):
    def expire_mid_slice():
        batch = Batch.objects.get(account=account)
        services.batch_expire(batch=batch, actor="sweep", reason="its deadline passed")

    flaky_hooks["expire"] = expire_mid_slice
    items = [{"payload": {"hook": "expire"} if n == 0 else {}} for n in range(15)]

    batch = ran(items, type="test.flaky")

    batch = assert_counters_exact(batch)
    assert batch.status == S.EXPIRED
    assert statuses(batch) == ["succeeded"] + ["cancelled"] * 14


@pytest.mark.parametrize("status", sorted(Batch.TERMINAL | {S.CANCELLING, S.FINALIZING}))
def test_batch_expire__batch_that_is_ending_is_left_alone(status, db):
    batch = BatchFactory(status=status)

    returned = services.batch_expire(batch=batch, actor="sweep", reason="late")

    assert returned.status == status
    batch.refresh_from_db()
    assert batch.status == status
    assert not BatchEvent.objects.filter(batch=batch).exists()
