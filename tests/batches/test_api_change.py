"""PATCH batches/{id}/: change a live batch's label, metadata, priority, concurrency, deadline."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batches.models import Batch, BatchEvent

pytestmark = pytest.mark.django_db

BATCHES = "/api/v1/batches/"


def create(client, **body) -> dict:
    response = client.post(BATCHES, body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def patch(client, batch_id, body):
    return client.patch(f"{BATCHES}{batch_id}/", body, format="json")


def test_patch__changes_each_field_and_records_old_and_new(client_a):
    batch = create(client_a, label="first", metadata={"a": 1}, items=[{"payload": {}}])
    deadline = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)

    response = patch(
        client_a,
        batch["id"],
        {
            "label": "second",
            "metadata": {"b": 2},
            "priority": 7,
            "max_concurrency": 3,
            "deadline": deadline.isoformat(),
        },
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["label"] == "second"
    assert body["metadata"] == {"b": 2}
    assert body["options"]["priority"] == 7
    assert body["options"]["max_concurrency"] == 3
    stored = Batch.objects.get(pk=batch["id"])
    assert (stored.label, stored.metadata, stored.priority) == ("second", {"b": 2}, 7)
    assert (stored.max_concurrency, stored.deadline) == (3, deadline)
    event = BatchEvent.objects.get(batch_id=batch["id"], kind="changed")
    assert event.detail["label"] == {"from": "first", "to": "second"}
    assert event.detail["metadata"] == {"from": {"a": 1}, "to": {"b": 2}}
    assert event.detail["priority"] == {"from": 0, "to": 7}
    assert event.detail["max_concurrency"] == {"from": None, "to": 3}
    assert event.detail["deadline"]["from"] is None
    assert event.actor.startswith("key:")
    timeline = client_a.get(f"{BATCHES}{batch['id']}/events/").json()
    assert "changed" in [entry["kind"] for entry in timeline["results"]]


def test_patch__only_the_fields_given_change(client_a):
    batch = create(client_a, label="keep", options={"priority": 3, "max_concurrency": 2})

    response = patch(client_a, batch["id"], {"max_concurrency": None})

    assert response.status_code == 200
    stored = Batch.objects.get(pk=batch["id"])
    assert (stored.label, stored.priority, stored.max_concurrency) == ("keep", 3, None)
    event = BatchEvent.objects.get(batch_id=batch["id"], kind="changed")
    assert event.detail == {"max_concurrency": {"from": 2, "to": None}}


def test_patch__a_body_that_changes_nothing_records_nothing(client_a):
    batch = create(client_a, label="same")

    response = patch(client_a, batch["id"], {"label": "same"})

    assert response.status_code == 200
    assert not BatchEvent.objects.filter(batch_id=batch["id"], kind="changed").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "echo"}, "type"),
        ({"options": {"priority": 1}}, "options"),
        ({"items": []}, "items"),
        ({"colour": "red"}, "colour"),
        ({"priority": 101}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"label": "x" * 201}, "label"),
        ({"deadline": "2001-01-01T00:00:00Z"}, "deadline"),
        ({"deadline": "tomorrow"}, "deadline"),
    ],
)
def test_patch__bad_input_is_refused_by_field_and_changes_nothing(client_a, body, field):
    batch = create(client_a, label="before", options={"priority": 1})

    response = patch(client_a, batch["id"], {"label": "after", **body})

    assert response.status_code == 400
    problem = response.json()
    assert response["Content-Type"].startswith("application/problem+json")
    assert problem["code"] == "invalid"
    assert field in [error["field"] for error in problem["errors"]]
    stored = Batch.objects.get(pk=batch["id"])
    assert (stored.label, stored.priority) == ("before", 1)
    assert not BatchEvent.objects.filter(batch_id=batch["id"], kind="changed").exists()


def test_patch__a_deadline_before_not_before_is_refused(client_a):
    not_before = timezone.now() + timedelta(hours=3)
    batch = create(client_a, options={"not_before": not_before.isoformat()})

    response = patch(
        client_a, batch["id"], {"deadline": (not_before - timedelta(hours=1)).isoformat()}
    )

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["deadline"]
    assert Batch.objects.get(pk=batch["id"]).deadline is None


@pytest.mark.parametrize("status", ["cancelling", "finalizing", *sorted(Batch.TERMINAL)])
def test_patch__an_ended_batch_is_a_conflict(client_a, status):
    batch = create(client_a, label="before")
    Batch.objects.filter(pk=batch["id"]).update(status=status)

    response = patch(client_a, batch["id"], {"label": "after"})

    assert response.status_code == 409
    assert response.json()["code"] == "batch_finished"
    assert Batch.objects.get(pk=batch["id"]).label == "before"


def test_patch__another_accounts_batch_is_not_found(client_a, client_b):
    batch = create(client_a, label="mine")

    response = patch(client_b, batch["id"], {"label": "theirs"})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert Batch.objects.get(pk=batch["id"]).label == "mine"


def test_patch__put_is_not_allowed(client_a):
    batch = create(client_a)

    response = client_a.put(f"{BATCHES}{batch['id']}/", {"label": "x"}, format="json")

    assert response.status_code == 405
