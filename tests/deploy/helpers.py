"""What the deploy kit's tests share: the kit's folder and an environment free of ours."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
# The virtualenv's own scripts (gunicorn), beside the Python running the tests.
VENV_BIN = Path(sys.executable).parent


def clean_env(**env: str) -> dict[str, str]:
    """Return this process's environment without batchsite's settings, plus `env`."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "BATCHSITE_")) and name != "DATABASE_URL"
    }
    return {**kept, **env}


def free_port() -> int:
    """Return a loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
