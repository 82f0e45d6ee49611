"""`manage.py runlocal` prints a staff login for the dashboard and makes a demo signer."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from jobs import get_job_type, job_types

pytestmark = pytest.mark.usefixtures("no_signer")


def runlocal() -> str:
    out = io.StringIO()
    call_command("runlocal", "--no-serve", stdout=out)
    return out.getvalue()


def runlocal_password() -> str:
    output = runlocal()
    found = re.findall(r"password: (\S+)", output)
    assert len(found) == 1, output
    return found[0]


@pytest.mark.django_db
def test_runlocal__prints_a_fresh_staff_password_each_run():
    first = runlocal_password()
    second = runlocal_password()

    assert first != second
    assert get_user_model().objects.filter(username="admin").count() == 1
    assert not Client().login(username="admin", password=first)
    client = Client()
    assert client.login(username="admin", password=second)
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_runlocal__makes_a_demo_signing_key_when_there_is_none(settings):
    assert get_job_type("document.sign").readiness() is not None

    first = runlocal()
    key = Path(settings.BATCHSITE_SIGNING_KEY)
    made = key.read_bytes()
    second = runlocal()

    assert f"Made a demo signing key for document.sign: {key}" in first
    assert "signing key" not in second
    assert key.read_bytes() == made  # an existing signer is never replaced
    assert [name for name, job in job_types().items() if job.readiness()] == []
    assert "Not ready" not in first + second


@pytest.mark.django_db
def test_runlocal__names_the_job_types_that_are_not_ready(no_mail_server):
    output = runlocal()

    assert "Not ready: email.send: no mail server is configured; set EMAIL_HOST" in output


def email_backend(**env: str) -> str:
    """Return the EMAIL_BACKEND batchsite's settings choose in a process with `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")}
    clean.pop("BATCHSITE_LOCAL_RUN", None)
    done = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.EMAIL_BACKEND)"],
        env={**clean, "DJANGO_SETTINGS_MODULE": "batchsite.settings", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().rsplit(".", 2)[-2]


def test_settings__a_local_run_prints_mail_unless_a_mail_server_is_named():
    assert email_backend(BATCHSITE_LOCAL_RUN="1") == "console"
    assert email_backend(BATCHSITE_LOCAL_RUN="1", EMAIL_HOST="mail.example.com") == "smtp"
    assert email_backend() == "smtp"
