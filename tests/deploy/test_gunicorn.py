"""Tests for deploy/gunicorn.conf.py: what it configures, and a real gunicorn serving with it."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time

import httpx
import pytest

from tests.conftest import wait_for
from tests.deploy.helpers import DEPLOY, VENV_BIN, clean_env, free_port

CONFIG = DEPLOY / "gunicorn.conf.py"
GUNICORN = VENV_BIN / "gunicorn"
# Shaped like a batchsite API key (8-character prefix, 32-character secret).
API_KEY = "Abcd1234." + "s3cr3t" * 5 + "xy"


def gunicorn_config(tmp_path, **env: str) -> dict[str, str]:
    """Return the settings gunicorn reads from the config file with this environment."""
    # --print-config loads the application too, so it needs what the settings need.
    app = {"DJANGO_SECRET_KEY": "not-secret", "BATCHSITE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(GUNICORN), "-c", str(CONFIG), "--print-config"],
        cwd=tmp_path,
        env=clean_env(**app, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"^(\w+)\s+= (.*)$", result.stdout, re.MULTILINE))


def test_gunicorn_conf__defaults_listen_on_loopback_with_a_bounded_pool(tmp_path):
    config = gunicorn_config(tmp_path)

    assert config["bind"] == "['127.0.0.1:8000']"
    assert config["wsgi_app"] == "batchsite.wsgi"
    assert config["chdir"] == str(DEPLOY.parent)
    cpus = len(os.sched_getaffinity(0))
    assert int(config["workers"]) == min(2 * cpus + 1, 8)
    assert config["threads"] == "2"


def test_gunicorn_conf__the_environment_sets_address_and_pool(tmp_path):
    chosen = gunicorn_config(
        tmp_path,
        BATCHSITE_BIND="10.0.0.5:8000,unix:/run/batchsite/web.sock",
        BATCHSITE_WEB_WORKERS="3",
        BATCHSITE_WEB_THREADS="4",
        BATCHSITE_WEB_TIMEOUT="300",
    )

    assert chosen["bind"] == "['10.0.0.5:8000', 'unix:/run/batchsite/web.sock']"
    assert (chosen["workers"], chosen["threads"], chosen["timeout"]) == ("3", "4", "300")


def test_gunicorn_conf__a_bad_value_stops_it_naming_the_variable(tmp_path):
    result = subprocess.run(
        [str(GUNICORN), "-c", str(CONFIG), "--check-config"],
        cwd=tmp_path,
        env=clean_env(BATCHSITE_WEB_WORKERS="lots"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "BATCHSITE_WEB_WORKERS must be an integer, not 'lots'" in result.stdout + result.stderr


@pytest.fixture
def gunicorn(tmp_path):
    """Start `gunicorn -c deploy/gunicorn.conf.py batchsite.wsgi` on a free loopback port.

    It runs from another directory than the project's, with the real settings (not the
    tests'), JSON log lines, and only the environment a deployment would give it.
    """
    port = free_port()
    env = clean_env(
        DJANGO_SETTINGS_MODULE="batchsite.settings",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        BATCHSITE_DATA_DIR=str(tmp_path / "data"),
        BATCHSITE_BIND=f"127.0.0.1:{port}",
        BATCHSITE_WEB_WORKERS="1",
        BATCHSITE_LOG_FORMAT="json",
    )
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(GUNICORN), "-c", str(CONFIG), "batchsite.wsgi"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, stderr.read_text()
        try:
            return httpx.get(f"{base}/healthz/", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.2)
        yield base, process, stdout
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def access_lines(stdout, process, *, request_ids: set[str]) -> list[dict]:
    """Return the JSON access lines on stdout, once there is one for each of `request_ids`.

    The fixture's own probes write lines too, so a count of lines would not say that
    the test's requests have theirs; the request id each response carried does.
    """

    def lines() -> list[dict]:
        found = [json.loads(line) for line in stdout.read_text().splitlines() if line.strip()]
        return [line for line in found if line["logger"] == "gunicorn.access"]

    def missing() -> set[str]:
        return request_ids - {line.get("request_id") for line in lines()}

    # Access lines are written after each response; give the last one a moment.
    deadline = time.monotonic() + 10
    while missing() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    return lines()


@pytest.mark.slow
def test_gunicorn_conf__serves_probes_by_address_and_logs_through_the_apps_logging(gunicorn):
    base, process, stdout = gunicorn
    by_address = {"Host": "10.42.7.19:8000"}

    health = httpx.get(f"{base}/healthz/", params={"api-key": API_KEY}, timeout=10)
    ready = httpx.get(f"{base}/readyz", headers=by_address, timeout=10)
    api = httpx.get(f"{base}/api/v1/job-types/", headers=by_address, timeout=10)

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert api.status_code == 400
    sent = {response.headers["X-Request-ID"] for response in (health, ready, api)}
    lines = access_lines(stdout, process, request_ids=sent)
    messages = [line["message"] for line in lines]
    assert any('"GET /readyz HTTP/1.1" 200' in message for message in messages), messages
    assert any('"GET /api/v1/job-types/ HTTP/1.1" 400' in message for message in messages)
    # The app's secrets filter cleans gunicorn's request lines too.
    assert any("api-key=[redacted]" in message for message in messages), messages
    assert API_KEY not in stdout.read_text()
    # Each access line names the request id its response carried, a redacted one too.
    assert sent <= {line.get("request_id") for line in lines}
