"""Every manage.py command works in a `make run` checkout without DJANGO_SECRET_KEY.

`make run` keeps a secret key in the data dir; any later `manage.py` command there uses it.
Without DJANGO_SECRET_KEY and without that file, settings say what to do and write nothing:
only DEBUG and local runs ever make the file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.deploy.helpers import clean_env

pytestmark = pytest.mark.slow  # whole Django processes, one after another


def manage(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run manage.py as a shell in a checkout would: no batchsite or Django variables."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=clean_env(BATCHSITE_DATA_DIR=str(data_dir), **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manage__commands_after_make_run_use_its_key_file(tmp_path):
    setup = manage(tmp_path, "runlocal", "--no-serve", BATCHSITE_LOCAL_RUN="1")
    assert setup.returncode == 0, setup.stderr
    key_file = tmp_path / "secret_key"
    key = key_file.read_text()

    created = manage(tmp_path, "createaccount", "x")
    status = manage(tmp_path, "batchstatus")
    usage = manage(tmp_path, "--help")
    command_help = manage(tmp_path, "createbatch", "--help")

    for done in (created, status, usage, command_help):
        assert (done.returncode, done.stderr) == (0, "")
    assert "x" in created.stdout
    assert status.stdout == "no batches yet\n"
    assert "[batches]" in usage.stdout
    assert "createbatch" in usage.stdout
    assert "--wait" in command_help.stdout
    assert key_file.read_text() == key  # read, never replaced


def test_manage__without_a_key_or_a_key_file_says_what_to_set_and_makes_nothing(tmp_path):
    done = manage(tmp_path, "batchstatus")

    assert done.returncode == 1
    assert done.stderr == (
        "batchsite is not configured right: DJANGO_SECRET_KEY is not set and there is no "
        f"key file {tmp_path / 'secret_key'}. Set DJANGO_SECRET_KEY to a long random string, "
        "or run `make run` once to make that file for this checkout.\n"
    )
    assert not (tmp_path / "secret_key").exists()


def test_manage__the_environment_key_wins_over_the_key_file(tmp_path):
    (tmp_path / "secret_key").write_text("from-the-file")
    code = "from django.conf import settings; print(settings.SECRET_KEY)"

    from_file = manage(tmp_path, "shell", "--no-imports", "-c", code)
    from_env = manage(
        tmp_path, "shell", "--no-imports", "-c", code, DJANGO_SECRET_KEY="from-the-environment"
    )

    assert from_file.stdout == "from-the-file\n"
    assert from_env.stdout == "from-the-environment\n"
