"""The five lines at the top of the README run as written against a live server and cluster."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from batches.models import Batch

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

README = Path(__file__).resolve().parents[2] / "README.md"


def first_python_block() -> str:
    """Return the README's first Python code block: the client on its first screen."""
    match = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert match, "the README has no Python example"
    return match.group(1)


def test_readme__the_client_in_five_lines_runs_as_written(live_server, api_key, cluster):
    code = first_python_block()
    assert len([line for line in code.splitlines() if line.strip()]) == 5
    assert 'Client("http://127.0.0.1:8000", "KEY")' in code
    code = code.replace("http://127.0.0.1:8000", live_server.url).replace('"KEY"', repr(api_key))
    printed = io.StringIO()

    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {})

    lines = printed.getvalue().splitlines()
    assert lines[-1] == "500 succeeded"
    assert lines[-2] == "100%"
    batch = Batch.objects.get()
    assert (batch.status, batch.succeeded_items) == ("finished", 500)
