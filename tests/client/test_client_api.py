"""The Python client against a live server, without a cluster: errors, items, updates."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.urls import resolve
from django.utils import timezone

from batches.api.views import BatchViewSet
from batches.models import Batch, BatchEvent, Item
from batchsite_client import (
    AuthenticationFailed,
    BatchEmpty,
    BatchExists,
    BatchFinished,
    BatchsiteError,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    WaitTimeout,
)
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db(transaction=True)


def has_file_item_route() -> bool:
    """Say whether the server has POST batches/{id}/items/file/ (issue 18's contract)."""
    match = resolve(f"/api/v1/batches/{uuid.uuid4()}/items/file/")
    return match.url_name != "not-found"


def test_errors__a_409_is_a_typed_conflict_with_its_code(client):
    batch = client.create_batch(type="echo")

    with pytest.raises(BatchEmpty) as caught:
        client.commit(batch)

    error = caught.value
    assert isinstance(error, Conflict)
    assert (error.status, error.code) == (409, "batch_empty")
    assert error.detail
    assert Batch.objects.get().status == Batch.Status.CREATED


def test_errors__a_400_carries_its_field_errors(client):
    with pytest.raises(InvalidRequest) as caught:
        client.create_batch(type="echo", options={"priority": "high"})

    error = caught.value
    assert (error.status, error.code) == (400, "invalid")
    assert any(e["field"] == "options.priority" for e in error.errors)
    assert error.problem["status"] == 400
    assert not Batch.objects.exists()


def test_errors__unknown_batch_is_not_found(client):
    with pytest.raises(NotFound) as caught:
        client.get_batch(uuid.uuid4())

    assert caught.value.code == "not_found"


def test_errors__a_bad_key_is_authentication_failed(live_server, db):
    with (
        Client(live_server.url, "not-a-key") as client,
        pytest.raises(AuthenticationFailed) as caught,
    ):
        client.get_batch(uuid.uuid4())

    assert (caught.value.status, caught.value.code) == (401, "not_authenticated")


def test_create_batch__an_id_taken_by_another_account_is_batch_exists(client, live_server):
    taken = client.create_batch(type="echo")
    from batches import services

    _, other_key = services.api_key_create(account=AccountFactory(name="other"), name="x")

    with Client(live_server.url, other_key) as other, pytest.raises(BatchExists) as caught:
        other.create_batch(type="echo", id=taken["id"])

    assert caught.value.code == "batch_exists"


def test_add_items__more_per_request_than_the_server_allows_is_refused(client, settings):
    settings.BATCHSITE_MAX_ITEMS_PER_REQUEST = 10
    batch = client.create_batch(type="echo")
    items = ({"payload": {"n": n}} for n in range(30))

    with pytest.raises(InvalidRequest) as caught:
        client.add_items(batch, items, per_request=20)

    assert caught.value.items_added == 0
    assert any(e["field"] == "items" for e in caught.value.errors)
    assert not Item.objects.exists()


def test_add_items__requests_stay_under_the_byte_limit(client, transport):
    batch = client.create_batch(type="echo")
    items = [{"payload": {"text": "x" * 1000, "n": n}} for n in range(20)]
    transport.requests.clear()

    added = client.add_items(batch, items, max_bytes=5000)

    posts = [r for r in transport.requests if r.method == "POST"]
    assert added == 20
    assert len(posts) == 5
    assert all(len(r.content) <= 5000 for r in posts)
    assert list(Item.objects.order_by("index").values_list("payload__n", flat=True)) == list(
        range(20)
    )


def test_upload__csv_from_an_open_file_with_the_type_from_its_name(client, tmp_path, transport):
    path = tmp_path / "items.csv"
    path.write_text("external_id,n\na,1\nb,2\n")
    batch = client.create_batch(type="echo")

    with path.open("rb") as file:
        report = client.upload(batch, file)

    assert report["added"] == 2
    upload = transport.requests[-1]
    assert upload.headers["Content-Type"] == "text/csv"
    assert upload.headers["Content-Length"] == str(path.stat().st_size)
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["a", "b"]


def test_upload__bad_lines_are_reported_with_their_index(client, tmp_path):
    path = tmp_path / "items.ndjson"
    path.write_text('{"payload": {"n": 1}}\nnot json\n')
    batch = client.create_batch(type="echo")

    report = client.upload(batch, path)

    assert (report["added"], report["rejected"]) == (1, 1)
    assert report["errors"][0]["index"] == 1


def test_wait__draws_a_tqdm_bar(client, capsys):
    batch = client.create_batch(type="echo", items=[{"payload": {}}] * 3, commit=True)

    ended = client.wait(batch, poll_interval=0.1, progress="tqdm")

    assert ended["status"] == "finished"
    assert "3/3" in capsys.readouterr().err


def test_wait__gives_up_with_wait_timeout(client):
    batch = client.create_batch(type="echo", items=[{"payload": {}}])

    with pytest.raises(WaitTimeout) as caught:
        client.wait(batch, poll_interval=0.1, timeout=0.3)

    assert isinstance(caught.value, TimeoutError)
    assert caught.value.batch["status"] == "open"


def test_list_batches__filters_and_follows_the_pages(client):
    for n in range(5):
        client.create_batch(type="echo", label="mine" if n % 2 == 0 else "other")

    mine = list(client.list_batches(label="mine", page_size=2))
    every = list(client.list_batches(page_size=2))

    assert len(mine) == 3
    assert {batch["label"] for batch in mine} == {"mine"}
    assert len(every) == 5


def test_iter_items__follows_the_cursor_and_filters(client):
    batch = client.create_batch(
        type="echo", items=[{"external_id": f"i{n}", "payload": {"n": n}} for n in range(12)]
    )

    items = list(client.iter_items(batch, page_size=5))
    one = list(client.iter_items(batch, external_id="i7"))

    assert [item["index"] for item in items] == list(range(12))
    assert [item["index"] for item in one] == [7]
    assert client.get_item(batch, 3)["external_id"] == "i3"


@pytest.mark.skipif(
    not has_file_item_route(),
    reason="POST batches/{id}/items/file/ is built by issue 18's OpenAPI part",
)
def test_add_file_item__sends_the_file_as_multipart(client, tmp_path):
    path = tmp_path / "doc.txt"
    path.write_bytes(b"hello file item")
    batch = client.create_batch(type="test.stamp")

    added = client.add_file_item(batch, path, payload={"note": "x"}, external_id="doc")

    assert added["added"] == 1
    item = client.get_item(batch, added["first_index"])
    assert item["external_id"] == "doc"
    assert item["payload"] == {"note": "x"}


@pytest.mark.skipif(
    not hasattr(BatchViewSet, "partial_update"),
    reason="PATCH batches/{id}/ is built by issue 18's live-changes part (the lead)",
)
def test_update_batch__changes_what_is_given(client):
    batch = client.create_batch(type="echo", label="before", items=[{"payload": {}}])
    deadline = timezone.now() + timedelta(hours=1)

    updated = client.update_batch(
        batch, label="after", metadata={"k": "v"}, priority=5, max_concurrency=2, deadline=deadline
    )
    cleared = client.update_batch(batch, max_concurrency=None)

    assert updated["label"] == "after"
    assert updated["metadata"] == {"k": "v"}
    assert updated["options"]["priority"] == 5
    assert updated["options"]["max_concurrency"] == 2
    assert cleared["options"]["max_concurrency"] is None
    assert cleared["label"] == "after"
    assert BatchEvent.objects.filter(batch_id=batch["id"], kind="changed").count() == 2


@pytest.mark.skipif(
    not hasattr(BatchViewSet, "partial_update"),
    reason="PATCH batches/{id}/ is built by issue 18's live-changes part (the lead)",
)
def test_update_batch__an_ended_batch_is_batch_finished(client):
    batch = client.create_batch(type="echo", items=[{"payload": {}}], commit=True)
    assert client.wait(batch, poll_interval=0.1)["status"] == "finished"

    with pytest.raises(BatchFinished) as caught:
        client.update_batch(batch, label="late")

    assert caught.value.code == "batch_finished"
    assert isinstance(caught.value, BatchsiteError)
