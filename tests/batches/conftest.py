"""Fixtures the engine, services and sweep tests share."""

from __future__ import annotations

import pytest

from batches import services
from batches.models import Batch
from tests.jobtypes import Flaky


def _items(items: int | list) -> list:
    return items if isinstance(items, list) else [{"payload": {"n": n}} for n in range(items)]


@pytest.fixture
def ran(account, django_capture_on_commit_callbacks):
    """Create, commit and process a batch inline through django-q2 (sync) and the engine.

    `items` is a list of items or a count of numbered ones; the batch comes back fresh.
    """

    def make(items: int | list = 3, *, type=None, **options) -> Batch:
        with django_capture_on_commit_callbacks(execute=True):
            batch, _ = services.batch_create(
                account=account,
                actor="test",
                type=type,
                items=_items(items),
                options=options,
                commit=True,
            )
        return Batch.objects.get(pk=batch.pk)

    return make


@pytest.fixture
def flaky_hooks(monkeypatch):
    """Let a test.flaky item whose payload has {"hook": NAME} call hooks[NAME]() once."""
    hooks: dict = {}
    original = Flaky.process

    def process(self, payload, file, context):
        hook = hooks.pop(payload.get("hook"), None)
        if hook is not None:
            hook()
        return original(self, payload, file, context)

    monkeypatch.setattr(Flaky, "process", process)
    return hooks
