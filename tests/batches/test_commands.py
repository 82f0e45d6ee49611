"""Tests for the management commands: createaccount, createapikey, runlocal."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from batches.management.commands import runlocal
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


@pytest.mark.parametrize(
    ("args", "url", "says"),
    [
        ([], "http://127.0.0.1:8000", None),
        (["--port", "8001"], "http://127.0.0.1:8001", None),
        (
            ["--host", "0.0.0.0", "--port", "8001"],
            "http://127.0.0.1:8001",
            "Listening on every interface (0.0.0.0:8001)",
        ),
        (["--host", "::1", "--port", "8002"], "http://[::1]:8002", None),
        (["--host", "::", "--port", "8003"], "http://[::1]:8003", "every interface ([::]:8003)"),
    ],
)
def test_runlocal__prints_the_url_and_exports_for_its_host_and_port(db, args, url, says):
    out, _ = run("runlocal", "--no-serve", *args)

    assert f"batchsite is starting on {url}/  (API docs: {url}/api/v1/docs/)" in out
    assert f"Dashboard login (a new password each run): {url}/" in out
    assert f"    export BATCHSITE_URL={url}\n" in out
    assert re.search(r"^    export BATCHSITE_KEY=\S+$", out, re.MULTILINE)
    assert "curl -s -X POST $BATCHSITE_URL/api/v1/batches/" in out
    assert (says in out) if says else ("every interface" not in out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port must be from 1 to 65535, not 0"),
        (["--port", "70000"], "--port must be from 1 to 65535, not 70000"),
        (["--host", " "], "--host must name an address"),
    ],
)
def test_runlocal__a_bad_host_or_port_is_refused_before_anything_is_made(db, args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run("runlocal", "--no-serve", *args)

    assert not Account.objects.exists()
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    ("host", "env", "allowed"),
    [
        ("192.0.2.7", {}, "localhost,127.0.0.1,[::1],192.0.2.7"),
        ("2001:db8::7", {}, "localhost,127.0.0.1,[::1],[2001:db8::7]"),
        ("192.0.2.7", {"DJANGO_ALLOWED_HOSTS": "ops.example"}, "ops.example"),
        ("127.0.0.1", {}, None),
        ("0.0.0.0", {}, None),
    ],
)
def test_runlocal__the_web_server_allows_the_one_host_it_serves_on(
    monkeypatch, settings, host, env, allowed
):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
    monkeypatch.delenv("DJANGO_ALLOWED_HOSTS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    web_env = runlocal.Command()._web_env(host)

    assert web_env.get("DJANGO_ALLOWED_HOSTS") == allowed
