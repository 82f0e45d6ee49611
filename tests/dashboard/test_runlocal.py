"""`manage.py runlocal` prints a staff login for the dashboard."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client


def runlocal_password() -> str:
    out = io.StringIO()
    call_command("runlocal", "--no-serve", stdout=out)
    found = re.findall(r"password: (\S+)", out.getvalue())
    assert len(found) == 1, out.getvalue()
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
