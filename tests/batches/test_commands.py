"""Tests for the management commands: createaccount, createapikey, runlocal."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from batches.models import Account, ApiKey


def run(*args) -> tuple[str, str]:
    """Run a management command; return what it wrote to stdout and stderr."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


# --- createaccount ------------------------------------------------------------------------------


def test_createaccount__creates_the_account_and_prints_its_number(db):
    out, _ = run("createaccount", "acme")

    account = Account.objects.get(name="acme")
    assert re.search(rf"\b{account.number}\b", out)
    assert "acme" in out


def test_createaccount__numbers_increase(db):
    first, _ = run("createaccount", "one")
    second, _ = run("createaccount", "two")

    numbers = [Account.objects.get(name=name).number for name in ("one", "two")]
    assert numbers[1] > numbers[0]
    assert str(numbers[0]) in first
    assert str(numbers[1]) in second


def test_createaccount__duplicate_name_is_a_command_error(db):
    run("createaccount", "acme")

    with pytest.raises(CommandError, match="exists already"):
        run("createaccount", "acme")

    assert Account.objects.filter(name="acme").count() == 1


def test_createaccount__blank_name_is_a_command_error(db):
    with pytest.raises(CommandError, match="needs a name"):
        run("createaccount", "  ")

    assert not Account.objects.exists()


# --- createapikey -------------------------------------------------------------------------------


def test_createapikey__by_name_prints_a_working_raw_key_last(account):
    out, err = run("createapikey", account.name)

    raw = last_line(out)
    key = ApiKey.objects.get_from_key(raw)
    assert key.account == account
    assert ApiKey.objects.is_valid(raw)
    assert key.prefix in err
    assert raw not in err


def test_createapikey__by_number(account):
    out, _ = run("createapikey", str(account.number))

    assert ApiKey.objects.get_from_key(last_line(out)).account == account


def test_createapikey__name_label_is_stored(account):
    out, _ = run("createapikey", account.name, "--name", "deploy bot")

    assert ApiKey.objects.get_from_key(last_line(out)).name == "deploy bot"


def test_createapikey__each_call_makes_a_new_key(account):
    first, _ = run("createapikey", account.name)
    second, _ = run("createapikey", account.name)

    assert last_line(first) != last_line(second)
    assert ApiKey.objects.filter(account=account).count() == 2
    assert ApiKey.objects.is_valid(last_line(first))
    assert ApiKey.objects.is_valid(last_line(second))


@pytest.mark.parametrize("name", ["nobody", "999999"])
def test_createapikey__unknown_account_is_a_command_error(account, name):
    with pytest.raises(CommandError, match="createaccount"):
        run("createapikey", name)

    assert not ApiKey.objects.exists()


# --- runlocal -----------------------------------------------------------------------------------


def runlocal_key() -> str:
    out, _ = run("runlocal", "--no-serve")
    found = re.findall(r"export BATCHSITE_KEY=(\S+)", out)
    assert len(found) == 1, out
    return found[0]


def test_runlocal__creates_the_demo_account_once_and_prints_a_fresh_key_each_time(db):
    first = runlocal_key()
    second = runlocal_key()

    assert first != second
    demo = Account.objects.get(name="demo")
    assert Account.objects.filter(name="demo").count() == 1
    assert ApiKey.objects.get_from_key(first).account == demo
    assert ApiKey.objects.get_from_key(second).account == demo
    assert ApiKey.objects.filter(account=demo).count() == 2


def test_runlocal__keeps_an_existing_demo_account(account):
    demo = Account.objects.create(name="demo", number=424242)

    key = runlocal_key()

    assert ApiKey.objects.get_from_key(key).account == demo
    assert Account.objects.filter(name="demo").count() == 1
