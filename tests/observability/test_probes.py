"""Tests for batchsite.probes: /healthz and /readyz, answered whatever the Host header."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import OperationalError, connections
from django_q.brokers import get_broker
from django_q.conf import Conf

PROBE_PATHS = ["/healthz/", "/healthz", "/readyz/", "/readyz"]
# How kubelets and load balancers name the instance they probe: never in ALLOWED_HOSTS.
PROBE_HOSTS = ["10.42.7.19:8000", "10.42.7.19", "[fd00::7:19]:8000", "ip-10-42-7-19.internal"]


@pytest.fixture
def no_cluster_stats():
    """Forget every cluster stat a cluster started by an earlier test may have left."""
    cache.delete(Conf.Q_STAT)


# --- healthz -----------------------------------------------------------------------------------


def test_healthz__answers_ok_without_the_database(client):
    # No django_db mark: any database access would raise.
    response = client.get("/healthz/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- any Host header -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", PROBE_HOSTS)
@pytest.mark.parametrize("path", PROBE_PATHS)
@pytest.mark.django_db
def test_probes__answer_whatever_the_host_header(client, path, host):
    response = client.get(path, HTTP_HOST=host)

    assert response.status_code == 200, response.content
    assert response.json()["status"] in ("ok", "ready")
    # Nothing of the Host comes back: not in the body, not in a header (no redirect).
    assert host.encode() not in response.content
    assert all(host not in value for value in response.headers.values())
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.parametrize("path", PROBE_PATHS)
@pytest.mark.django_db
def test_probes__answer_head_but_not_post(client, path):
    host = PROBE_HOSTS[0]

    assert client.head(path, HTTP_HOST=host).status_code == 200
    assert client.post(path, HTTP_HOST=host).status_code == 405


@pytest.mark.parametrize(
    "path", ["/api/v1/job-types/", "/metrics/", "/healthz/extra/", "/healthzz", "/admin/login/"]
)
@pytest.mark.django_db
def test_probes__every_other_path_stays_under_allowed_hosts(client, path):
    response = client.get(path, HTTP_HOST=PROBE_HOSTS[0])

    assert response.status_code == 400


@pytest.mark.django_db
def test_probes__keep_the_security_headers(client):
    response = client.get("/readyz", HTTP_HOST=PROBE_HOSTS[0])

    assert response["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response["Content-Security-Policy"]


# --- readyz ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz__ready_without_a_worker_cluster(client, no_cluster_stats):
    # Web pods stay in rotation while no worker runs; `manage.py workercheck` probes workers.
    response = client.get("/readyz/")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


@pytest.mark.django_db
def test_readyz__names_the_database_when_it_is_unreachable(client, monkeypatch):
    def unreachable(self):
        raise OperationalError("connection refused by db.internal:5432")

    monkeypatch.setattr(type(connections["default"]), "ensure_connection", unreachable)
    response = client.get("/readyz/")
    monkeypatch.undo()

    assert response.status_code == 503
    body = response.json()
    # The ORM broker lives in the database, so it fails with it; Redis answers on its own.
    broker = "failed" if Conf.ORM else "ok"
    assert body == {"status": "unavailable", "checks": {"database": "failed", "broker": broker}}
    # The reason stays in the log: the unauthenticated body reveals nothing of it.
    assert b"db.internal" not in response.content


@pytest.mark.django_db
def test_readyz__names_the_broker_when_it_does_not_answer(client, monkeypatch):
    def ping(self):
        raise ConnectionError("broker down")

    # Whichever broker this run uses (ORM, or Redis in CI's second pass).
    monkeypatch.setattr(type(get_broker()), "ping", ping)
    response = client.get("/readyz/", HTTP_HOST=PROBE_HOSTS[0])

    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "failed"}
