"""Shared fixtures: accounts and API clients, and a real qcluster subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from rest_framework.test import APIClient

from batches import services
from tests.factories import AccountFactory

ROOT = Path(__file__).resolve().parent.parent


def key_client(account) -> APIClient:
    """Return an API client authenticated with a new key of `account`."""
    _, raw = services.api_key_create(account=account, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def wsgi_app(db):
    """Return batchsite's WSGI application, kept from closing the test's database connection.

    Django's own test client does the same: after each request Django closes the
    connection, and with it the transaction the test runs in.
    """
    from batchsite.wsgi import application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield application
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def account(db):
    return AccountFactory(name="acme")


@pytest.fixture
def other_account(db):
    return AccountFactory(name="globex")


@pytest.fixture
def client_a(account) -> APIClient:
    return key_client(account)


@pytest.fixture
def client_b(other_account) -> APIClient:
    return key_client(other_account)


@pytest.fixture
def staff_client(db) -> APIClient:
    user = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def staff_user(db):
    """A staff user, as operators of the dashboard are."""
    return get_user_model().objects.create_user("operator", password="pw", is_staff=True)


@pytest.fixture
def staff(staff_user) -> Client:
    """A logged-in staff session (Django's test client, CSRF checks off)."""
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def csrf_staff(staff_user) -> Client:
    """A staff session whose POSTs must carry a CSRF token, as a browser's do."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    return client


@pytest.fixture
def no_signer(settings, tmp_path):
    """Point document.sign's signer at an empty folder: not ready until a test makes a key."""
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.BATCHSITE_SIGNING_KEY = tmp_path / "signer" / "key.pem"
    settings.BATCHSITE_SIGNING_CERT = tmp_path / "signer" / "cert.pem"


@pytest.fixture
def no_mail_server(settings):
    """Django's default mail settings, SMTP to a host nobody named: email.send is not ready."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def wait_for(predicate: Callable[[], object], *, timeout: float = 60, interval: float = 0.1):
    """Poll until `predicate()` is truthy and return its value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def database_url() -> str:
    """Return a DATABASE_URL for the test database this process uses."""
    from django.db import connection

    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = quote(settings["USER"] or "")
    password = f":{quote(settings['PASSWORD'])}" if settings.get("PASSWORD") else ""
    host = settings["HOST"] or "127.0.0.1"
    port = settings["PORT"] or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings['NAME']}"


class Cluster:
    """A real `manage.py qcluster` subprocess on the test database."""

    def __init__(self, *, workers: int = 2, env: dict[str, str] | None = None):
        self.workers = workers
        self.env = env or {}
        self.process: subprocess.Popen | None = None
        self.log = Path(os.environ["BATCHSITE_DATA_DIR"]) / f"qcluster-{time.time_ns()}.log"

    def start(self, command: list[str] | None = None) -> Cluster:
        """Start the cluster; it picks up tasks as soon as it runs.

        `command` runs another manage.py command in its place (one that starts a cluster).
        """
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url(),
            "BATCHSITE_TEST_CLUSTER": "1",
            "BATCHSITE_WORKERS": str(self.workers),
            **self.env,
        }
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *(command or ["qcluster"])],
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """Kill the cluster and all its worker processes at once, as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._close_log()

    def stop(self) -> None:
        """Stop the cluster cleanly, or kill it if it does not stop in time."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError, AttributeError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._close_log()

    def _close_log(self) -> None:
        if getattr(self, "_log_file", None) and not self._log_file.closed:
            self._log_file.close()

    def output(self) -> str:
        """Return what the cluster printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def cluster_factory(transactional_db, monkeypatch):
    """Start real qcluster subprocesses; tasks enqueued by the test go to the real broker."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)
    get_broker().purge_queue()
    started: list[Cluster] = []

    def start(**kwargs) -> Cluster:
        cluster = Cluster(**kwargs).start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
def cluster(cluster_factory) -> Cluster:
    """One running qcluster with two workers."""
    return cluster_factory()
