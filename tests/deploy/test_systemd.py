"""Tests for deploy/systemd/: the units parse, and every command they run is the project's.

The units name the install dir (/opt/batchsite) and the environment file
(/etc/batchsite/batchsite.env); the tests read them with those paths pointed at this
checkout, its virtualenv and a scratch environment file.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from importlib.util import find_spec

import pytest
from django.core.management import get_commands, load_command_class

from tests.conftest import ROOT
from tests.deploy.helpers import DEPLOY, VENV_BIN

UNITS = DEPLOY / "systemd"
INSTALL_DIR = "/opt/batchsite"
ENV_FILE = "/etc/batchsite/batchsite.env"


def unit_files() -> list[str]:
    return sorted(path.name for path in UNITS.glob("*.service"))


def directives(name: str) -> dict[str, list[str]]:
    """Return a unit's directives as {key: [values in order]}, comments and sections aside."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def here(path: str) -> str:
    """Return a path under the install dir as the same path in this checkout."""
    path = path.replace(f"{INSTALL_DIR}/.venv/bin/", f"{VENV_BIN}/")
    return path.replace(INSTALL_DIR, str(ROOT))


def test_units__the_kit_has_web_worker_and_migrate():
    assert unit_files() == [
        "batchsite-migrate.service",
        "batchsite-web.service",
        "batchsite-worker@.service",
    ]


@pytest.mark.parametrize("name", unit_files())
def test_units__run_as_the_batchsite_user_with_the_environment_file(name):
    unit = directives(name)

    assert unit["User"] == ["batchsite"]
    assert unit["WorkingDirectory"] == [INSTALL_DIR]
    assert unit["EnvironmentFile"] == [ENV_FILE]


@pytest.mark.parametrize("name", unit_files())
def test_units__every_command_is_a_file_and_a_command_of_the_project(name):
    commands = get_commands()
    for key, values in directives(name).items():
        if not key.startswith("Exec") or key == "ExecReload":
            continue
        for value in values:
            words = shlex.split(value.replace("$MAINPID", "4242"))
            program = here(words[0])
            assert shutil.which(program), f"{name}: {key} runs {words[0]}, which is not here"
            for word in words[1:]:
                if word.startswith(INSTALL_DIR):
                    assert (ROOT / word.removeprefix(f"{INSTALL_DIR}/")).is_file(), word
            if words[0].endswith("/gunicorn"):
                assert words[1:3] == ["-c", f"{INSTALL_DIR}/deploy/gunicorn.conf.py"]
                assert find_spec(words[3]) is not None
            if len(words) > 2 and words[1].endswith("/manage.py"):
                command, args = words[2], words[3:]
                assert command in commands, f"{name}: no command {command}"
                # The command's own parser: an option it does not know exits with an error.
                parser = load_command_class(commands[command], command).create_parser(
                    "manage.py", command
                )
                parser.parse_args(args)


def test_worker__stops_on_sigterm_within_a_bound_and_restarts_on_failure():
    unit = directives("batchsite-worker@.service")

    assert unit["KillSignal"] == ["SIGTERM"]
    assert unit["KillMode"] == ["mixed"]
    assert int(unit["TimeoutStopSec"][0]) > 0
    assert unit["Restart"] == ["on-failure"]
    assert unit["ExecStart"] == [f"{INSTALL_DIR}/.venv/bin/python {INSTALL_DIR}/manage.py qcluster"]
    # Started means reporting: a rolling restart waits for this very cluster.
    assert "workercheck --pid $MAINPID --wait" in unit["ExecStartPost"][0]


def test_web__gives_gunicorn_time_to_finish_requests_before_killing_it():
    unit = directives("batchsite-web.service")
    config = (DEPLOY / "gunicorn.conf.py").read_text()
    graceful = int(re.search(r"^graceful_timeout = (\d+)$", config, re.MULTILINE)[1])

    assert unit["Type"] == ["notify"]
    assert int(unit["TimeoutStopSec"][0]) > graceful
    assert unit["Restart"] == ["on-failure"]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd)",
)
def test_units__systemd_analyze_verify_finds_nothing(tmp_path):
    env_file = tmp_path / "batchsite.env"
    env_file.write_text("")
    for name in unit_files():
        text = here((UNITS / name).read_text()).replace(ENV_FILE, str(env_file))
        (tmp_path / name).write_text(text)

    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in unit_files())],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""
