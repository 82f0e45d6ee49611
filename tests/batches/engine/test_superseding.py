"""Tests for batches.engine.superseding: `superseded` (DLCS) once later batches redid every key."""

from __future__ import annotations

import io
import zipfile

import pytest

from batches import engine, services
from batches.engine import superseding
from batches.models import Batch, Chunk, Item
from tests.factories import AccountFactory
from tests.helpers.api import BATCHES, batch_url, create_batch


@pytest.fixture
def finish(account, django_capture_on_commit_callbacks):
    """Create a batch of echo items with the given keys, commit it and run it to its end."""

    def run(keys, *, owner=None, failing=(), **options) -> Batch:
        items = [
            {**({"key": key} if key else {}), "payload": {"fail": True} if key in failing else {}}
            for key in keys
        ]
        with django_capture_on_commit_callbacks(execute=True):
            batch, _ = services.batch_create(
                account=owner or account,
                actor="test",
                items=items,
                options=options or None,
                commit=True,
            )
        batch.refresh_from_db()
        assert batch.is_terminal, batch.status
        return batch

    return run


def flags(*batches: Batch) -> list[bool]:
    return [Batch.objects.get(pk=batch.pk).superseded for batch in batches]


def test_supersede__only_once_every_key_was_redone(finish, client_a):
    a = finish(["x", "y"])
    b = finish(["x"])

    assert flags(a, b) == [False, False]

    c = finish(["y", "z"])

    assert [a.status, b.status, c.status] == [Batch.Status.FINISHED] * 3
    assert flags(a, b, c) == [True, False, False]
    assert client_a.get(batch_url(a)).json()["superseded"] is True
    assert client_a.get(batch_url(b)).json()["superseded"] is False


def test_supersede__one_later_batch_with_all_keys_supersedes(finish):
    a = finish(["x", "y"])

    b = finish(["y", "x", "w"])

    assert flags(a, b) == [True, False]


def test_supersede__several_earlier_batches_at_once(finish):
    a = finish(["x"])
    b = finish(["y"])
    c = finish(["x", "z"])

    d = finish(["x", "y", "z"])

    assert flags(a, b, c, d) == [True, True, True, False]


def test_supersede__a_key_whose_later_item_failed_is_not_redone(finish):
    a = finish(["x", "y"])

    b = finish(["x", "y"], failing={"y"})

    assert b.status == Batch.Status.FINISHED
    assert b.failed_items == 1
    assert flags(a) == [False]


def test_supersede__later_failed_atomic_batch_does_not_supersede(finish):
    a = finish(["x", "y"])

    b = finish(["x", "y", "boom"], failing={"boom"}, atomic=True)

    assert b.status == Batch.Status.FAILED
    assert flags(a) == [False]
    assert superseding.superseded_refresh(Batch.objects.get(pk=a.pk)) is False


def test_supersede__later_stopped_batch_does_not_supersede(finish):
    a = finish(["x", "y"])

    b = finish(["x", "y", "boom"], failing={"boom"}, stop_on_error=True)

    assert b.status == Batch.Status.STOPPED
    assert Item.objects.filter(batch=b, key__in=["x", "y"], status="succeeded").count() == 2
    assert flags(a) == [False]
    assert superseding.superseded_refresh(Batch.objects.get(pk=a.pk)) is False


def test_supersede__later_cancelled_batch_does_not_supersede(finish, account):
    a = finish(["x", "y"])
    # x and y succeed in the first chunk; the batch is cancelled before the second runs.
    items = [{"key": "x", "payload": {}}, {"key": "y", "payload": {}}]
    items += [{"payload": {"n": n}} for n in range(150)]
    b, _ = services.batch_create(
        account=account, actor="test", type="test.flaky", items=items, commit=True
    )
    first = Chunk.objects.filter(batch=b).order_by("start_index").first()
    engine.chunk_process(chunk_id=first.pk)

    b = services.batch_cancel(batch=b, actor="test")

    assert b.status == Batch.Status.CANCELLED
    assert Item.objects.filter(batch=b, key__in=["x", "y"], status="succeeded").count() == 2
    assert flags(a) == [False]
    assert superseding.superseded_refresh(Batch.objects.get(pk=a.pk)) is False


def test_supersede__batches_without_keys_are_never_superseded(finish):
    a = finish(["", ""])

    b = finish(["", "", ""])
    c = finish(["x"])

    assert flags(a, b, c) == [False, False, False]
    assert superseding.superseded_refresh(Batch.objects.get(pk=a.pk)) is False


def test_supersede__another_accounts_batch_never_supersedes(finish):
    a = finish(["x", "y"])

    other = finish(["x", "y"], owner=AccountFactory())

    assert other.status == Batch.Status.FINISHED
    assert flags(a) == [False]
    assert superseding.superseded_refresh(Batch.objects.get(pk=a.pk)) is False


def test_supersede__flag_set_at_finish_agrees_with_a_recompute_when_finishing_out_of_order(
    account, finish, django_capture_on_commit_callbacks
):
    # A is created first, B later; B finishes before A does. B redid every key of A, and
    # superseded_refresh says A is superseded: finishing A must not leave the flag behind.
    a, _ = services.batch_create(
        account=account, actor="test", items=[{"key": "x", "payload": {}}], commit=True
    )
    b = finish(["x"])
    assert b.number > a.number
    chunk = Chunk.objects.get(batch=a)

    with django_capture_on_commit_callbacks(execute=True):
        engine.chunk_process(chunk_id=chunk.pk)

    a.refresh_from_db()
    assert a.status == Batch.Status.FINISHED
    stored = a.superseded
    assert stored == superseding.superseded_refresh(a)
    assert stored is True


# --- ZIP items ------------------------------------------------------------------------------------


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def stamp_run(client, files: dict[str, bytes], capture) -> Batch:
    batch = create_batch(client, type="test.stamp")
    response = client.post(
        batch_url(batch, "upload/"), data=zip_bytes(files), content_type="application/zip"
    )
    assert response.status_code == 200, response.content
    with capture(execute=True):
        assert client.post(batch_url(batch, "commit/")).status_code == 200
    batch = Batch.objects.get(pk=batch["id"])
    assert batch.status == Batch.Status.FINISHED
    return batch


def test_supersede__zip_items_are_keyed_by_member_name(
    client_a, django_capture_on_commit_callbacks
):
    a = stamp_run(
        client_a, {"img1.tif": b"one", "img2.tif": b"two"}, django_capture_on_commit_callbacks
    )
    keys = Item.objects.filter(batch=a).order_by("index").values_list("key", flat=True)
    assert list(keys) == ["img1.tif", "img2.tif"]

    b = stamp_run(
        client_a, {"img2.tif": b"2", "img1.tif": b"1"}, django_capture_on_commit_callbacks
    )

    assert flags(a, b) == [True, False]


# --- list filter and refresh ----------------------------------------------------------------------


def test_batch_list__filters_by_superseded(finish, client_a):
    a = finish(["x"])
    b = finish(["x"])
    c = finish(["y"])
    assert flags(a, b, c) == [True, False, False]

    superseded = client_a.get(f"{BATCHES}?superseded=true").json()["results"]
    current = client_a.get(f"{BATCHES}?superseded=false").json()["results"]
    everything = client_a.get(BATCHES).json()["results"]

    assert [batch["id"] for batch in superseded] == [str(a.pk)]
    assert {batch["id"] for batch in current} == {str(b.pk), str(c.pk)}
    assert len(everything) == 3


def test_superseded_refresh__recomputes_a_stale_flag_both_ways(finish):
    a = finish(["x"])
    b = finish(["y"])
    Batch.objects.filter(pk=a.pk).update(superseded=True)
    c = finish(["y"])
    Batch.objects.filter(pk=b.pk).update(superseded=False)

    assert superseding.superseded_refresh(Batch.objects.get(pk=a.pk)) is False
    assert superseding.superseded_refresh(Batch.objects.get(pk=b.pk)) is True
    assert flags(a, b, c) == [False, True, False]


def test_superseded_refresh__clears_the_flag_once_the_superseding_batch_is_deleted(finish):
    a = finish(["x"])
    b = finish(["x"])
    assert flags(a) == [True]

    services.batch_delete(batch=b, actor="test")

    assert superseding.superseded_refresh(Batch.objects.get(pk=a.pk)) is False
    assert flags(a) == [False]


def test_superseded_refresh__unfinished_batch_is_never_superseded(finish, account):
    open_batch, _ = services.batch_create(
        account=account, actor="test", items=[{"key": "x", "payload": {}}]
    )
    finish(["x"])

    assert superseding.superseded_refresh(open_batch) is False
    assert flags(open_batch) == [False]
