"""The README's third-party job type, registered through BATCHSITE_JOB_TYPES."""

import pytest

from batches import services
from batches.models import Item
from tests.factories import AccountFactory


@pytest.fixture
def wordcount(settings):
    settings.BATCHSITE_JOB_TYPES = [
        *settings.BATCHSITE_JOB_TYPES,
        "docs.examples.wordcount.WordCount",
    ]


@pytest.mark.django_db
def test_wordcount__counts_and_fails_short_texts(wordcount, django_capture_on_commit_callbacks):
    items = [
        {"payload": {"text": "one two three"}},
        {"payload": {"text": "hi", "min_words": 2}},
    ]
    with django_capture_on_commit_callbacks(execute=True):
        batch, _ = services.batch_create(
            account=AccountFactory(),
            actor="test",
            type="example.wordcount",
            items=items,
            commit=True,
        )

    first, second = Item.objects.filter(batch=batch).order_by("index")
    assert first.result == {"words": 3}
    assert (second.status, second.error_code) == ("failed", "too_short")


@pytest.mark.django_db
def test_wordcount__bad_payload_is_refused_at_submission(wordcount, client_a):
    response = client_a.post(
        "/api/v1/batches/",
        {"type": "example.wordcount", "items": [{"payload": {"text": 5}}]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": 0, "field": "payload.text", "code": "invalid", "message": "must be a string"}
    ]
