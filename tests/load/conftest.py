"""Fixtures for the load tests: gunicorn and qcluster processes on the test database.

The load tests need PostgreSQL and Redis (SQLite takes one writer at a time, which is not
what they measure), so on any other set-up they skip, saying why; with
BATCHSITE_LOAD_REQUIRED=1 (as .ci/run sets) they fail instead, so CI cannot pass them by
skipping. Their figures are printed in pytest's summary, pass or fail, and written as JSON
to BATCHSITE_LOAD_REPORT_DIR when it is set.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, database_url

FIGURES: list[tuple[str, str]] = []


def unsupported_reason() -> str:
    """Say why the load tests cannot run on this set-up, or return ''."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return "load tests need PostgreSQL: set DATABASE_URL=postgres://..."
    if not settings.BATCHSITE_BROKER_URL.startswith(("redis://", "rediss://")):
        return "load tests need the Redis broker: set BATCHSITE_BROKER_URL=redis://..."
    if importlib.util.find_spec("gunicorn") is None:
        return "load tests need gunicorn (make install)"
    return ""


def pytest_collection_modifyitems(config, items):
    load_items = [item for item in items if item.get_closest_marker("load")]
    reason = unsupported_reason() if load_items else ""
    if not reason:
        return
    if os.environ.get("BATCHSITE_LOAD_REQUIRED") == "1":
        raise pytest.UsageError(f"BATCHSITE_LOAD_REQUIRED=1 but {reason}")
    for item in load_items:
        item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter):
    for title, text in FIGURES:
        terminalreporter.write_sep("=", title)
        terminalreporter.write_line(text)


def figures_report(title: str, figures: dict, text: str) -> None:
    """Keep figures for pytest's summary, and write them as JSON when asked to."""
    FIGURES.append((title, text))
    print(f"\n{title}\n{text}")
    directory = os.environ.get("BATCHSITE_LOAD_REPORT_DIR")
    if directory:
        path = Path(directory) / f"{title.split()[0]}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2, default=str))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServer:
    """`gunicorn batchsite.wsgi` on a free loopback port, on the test database."""

    def __init__(self, *, workers: int, threads: int):
        self.workers = workers
        self.threads = threads
        self.port = free_port()
        self.log = Path(os.environ["BATCHSITE_DATA_DIR"]) / f"gunicorn-{time.time_ns()}.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebServer:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "batchsite.settings",
            "DATABASE_URL": database_url(),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "batchsite.wsgi",
             "--workers", str(self.workers), "--threads", str(self.threads),
             "--bind", f"127.0.0.1:{self.port}", "--timeout", "120", "--graceful-timeout", "10",
             "--error-logfile", "-"],
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"gunicorn did not start:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        return self

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz/", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError, AttributeError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process:
            self.process.wait()
        if not self._log_file.closed:
            self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def web_server(transactional_db):
    """Run gunicorn (4 processes of 2 threads by default) until the test ends."""
    server = WebServer(
        workers=int(os.environ.get("BATCHSITE_LOAD_WEB_WORKERS", "4")),
        threads=int(os.environ.get("BATCHSITE_LOAD_WEB_THREADS", "2")),
    ).start()
    yield server
    server.stop()
