"""Tenancy: an account's key never sees or touches another account's batches."""

from __future__ import annotations

import uuid

import pytest

from batches.models import Batch, BatchEvent, Item
from tests.helpers.api import (
    BATCHES,
    assert_problem,
    batch_url,
    create_batch,
    problem_content,
    row_counts,
)

REQUESTS = [
    pytest.param("get", "", None, id="retrieve"),
    pytest.param("delete", "", None, id="delete"),
    pytest.param("post", "commit/", None, id="commit"),
    pytest.param("post", "cancel/", None, id="cancel"),
    pytest.param("post", "rerun/", {"items": "all"}, id="rerun"),
    pytest.param("get", "items/", None, id="items-list"),
    pytest.param("post", "items/", {"payload": {"n": 9}}, id="items-add"),
    pytest.param("get", "items/0/", None, id="item"),
    pytest.param("get", "results/", None, id="results"),
    pytest.param("get", "errors/", None, id="errors"),
    pytest.param("get", "events/", None, id="events"),
]


def send(client, method: str, url: str, body):
    if method == "post":
        return client.post(url, body, format="json")
    return getattr(client, method)(url)


@pytest.fixture
def batch_of_a(client_a) -> dict:
    """An open batch of account A with three items."""
    return create_batch(client_a, label="a's", items=[{"payload": {"n": n}} for n in range(3)])


@pytest.mark.parametrize(("method", "suffix", "body"), REQUESTS)
def test_tenancy__another_accounts_batch_is_404_like_a_missing_one(
    client_b, batch_of_a, method, suffix, body
):
    before = row_counts()

    response = send(client_b, method, batch_url(batch_of_a, suffix), body)
    missing = send(client_b, method, batch_url(uuid.uuid4(), suffix), body)

    assert_problem(response, 404, "not_found")
    assert_problem(missing, 404, "not_found")
    assert problem_content(response) == problem_content(missing)
    assert row_counts() == before


@pytest.mark.parametrize(("method", "suffix", "body"), REQUESTS)
def test_tenancy__another_account_leaves_the_batch_as_it_was(
    client_a, client_b, batch_of_a, method, suffix, body
):
    events = BatchEvent.objects.filter(batch_id=batch_of_a["id"]).count()

    send(client_b, method, batch_url(batch_of_a, suffix), body)

    batch = Batch.objects.get(pk=batch_of_a["id"])
    assert batch.status == Batch.Status.OPEN
    assert batch.committed_at is None
    assert Item.objects.filter(batch=batch, status="pending").count() == 3
    assert BatchEvent.objects.filter(batch=batch).count() == events
    assert client_a.get(batch_url(batch_of_a)).status_code == 200


def test_tenancy__another_accounts_finished_batch_cannot_be_rerun(
    client_a, client_b, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        batch = create_batch(client_a, items=[{"payload": {"fail": True}}], commit=True)

    response = client_b.post(batch_url(batch, "rerun/"), {"items": "failed"}, format="json")

    assert_problem(response, 404, "not_found")
    assert Batch.objects.get(pk=batch["id"]).status == Batch.Status.FINISHED


def test_tenancy__list_shows_only_the_accounts_own_batches(client_a, client_b, batch_of_a):
    own = create_batch(client_b, label="b's")

    listed = client_b.get(BATCHES).json()
    filtered = client_b.get(f"{BATCHES}?status=open&status=created&label=a").json()

    assert [b["id"] for b in listed["results"]] == [own["id"]]
    assert listed["count"] == 1
    assert filtered["results"] == []


def test_tenancy__another_account_cannot_take_the_id(client_b, batch_of_a):
    before = row_counts()

    response = client_b.post(
        BATCHES, {"id": batch_of_a["id"], "items": [{"payload": {}}]}, format="json"
    )

    body = assert_problem(response, 409, "batch_exists")
    assert "a's" not in str(body), "the conflict says nothing about the other account's batch"
    assert row_counts() == before
    assert Batch.objects.get(pk=batch_of_a["id"]).label == "a's"


def test_tenancy__staff_see_every_accounts_batch(staff_client, batch_of_a):
    response = staff_client.get(batch_url(batch_of_a))

    assert response.status_code == 200
    assert response.json()["label"] == "a's"
