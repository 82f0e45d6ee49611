"""Fixtures shared by the engine's tests."""

import pytest
from django_q.brokers import get_broker
from django_q.conf import Conf


@pytest.fixture
def broker_queue(monkeypatch):
    """Send chunk tasks to the real broker instead of running them inline; yield the broker."""
    monkeypatch.setattr(Conf, "SYNC", False)
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()
