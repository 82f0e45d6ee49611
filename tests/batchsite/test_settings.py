"""Settings read from the environment: a value that does not parse is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def manage_check(data_dir: Path, **settings: str) -> subprocess.CompletedProcess:
    """Run `manage.py check` on SQLite with these environment settings."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "batchsite.settings",
        "DJANGO_SECRET_KEY": "settings-test-only-not-secret",
        "BATCHSITE_DATA_DIR": str(data_dir),
        **settings,
    }
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BATCHSITE_SLICE_SECONDS", "abc", "BATCHSITE_SLICE_SECONDS must be a number, not 'abc'"),
        ("BATCHSITE_SLICE_SECONDS", "nan", "BATCHSITE_SLICE_SECONDS must be a number, not 'nan'"),
        ("BATCHSITE_WORKERS", "two", "BATCHSITE_WORKERS must be an integer, not 'two'"),
        (
            "BATCHSITE_OUTBOUND_ALLOWED_PORTS",
            "443,http",
            "BATCHSITE_OUTBOUND_ALLOWED_PORTS must be a comma list of ports, not 'http' in it",
        ),
        (
            "BATCHSITE_OUTBOUND_PROXY",
            "socks5://127.0.0.1:1080",
            "BATCHSITE_OUTBOUND_PROXY must be an http:// or https:// URL, "
            "not 'socks5://127.0.0.1:1080'",
        ),
        (
            "BATCHSITE_AUTH_FAILURES_PER_MINUTE",
            "-1",
            "BATCHSITE_AUTH_FAILURES_PER_MINUTE must be an integer of at least 0, not '-1'",
        ),
        (
            "BATCHSITE_EMAIL_ALLOWED_FROM",
            "@shop.example,shop.example",
            "BATCHSITE_EMAIL_ALLOWED_FROM must be a comma list of addresses (shop@example.com) "
            "and domains (@example.com), not 'shop.example' in it",
        ),
        (
            "DJANGO_DEBUG",
            "maybe",
            "DJANGO_DEBUG must be 1/0, true/false, yes/no or on/off, not 'maybe'",
        ),
    ],
)
def test_manage__a_setting_that_does_not_parse_is_one_line_naming_it(tmp_path, name, value, says):
    done = manage_check(tmp_path, **{name: value})

    assert done.returncode == 1
    assert done.stderr == f"batchsite is not configured right: {says}\n"


def test_manage__well_formed_settings_pass(tmp_path):
    done = manage_check(
        tmp_path,
        BATCHSITE_SLICE_SECONDS="0.5",
        DJANGO_DEBUG="off",
        BATCHSITE_AUTH_FAILURES_PER_MINUTE="0",
        BATCHSITE_EMAIL_ALLOWED_FROM="news@shop.example, @mail.shop.example",
    )

    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("deep", "BATCHSITE_JSON_MAX_DEPTH must be an integer, not 'deep'"),
        ("0", "BATCHSITE_JSON_MAX_DEPTH must be an integer of at least 1, not '0'"),
        ("201", "BATCHSITE_JSON_MAX_DEPTH must be an integer of at most 200, not '201'"),
    ],
)
def test_manage__a_json_depth_limit_out_of_range_is_one_line(tmp_path, value, says):
    done = manage_check(tmp_path, BATCHSITE_JSON_MAX_DEPTH=value)

    assert done.returncode == 1
    assert done.stderr == f"batchsite is not configured right: {says}\n"
