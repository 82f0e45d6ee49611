"""The install is reproducible: every dependency pinned with hashes, installed from the lock.

requirements.txt (runtime) and requirements-dev.txt (runtime + the dev extra) are written by
`make lock` from pyproject.toml; `make run` and `make install` install them with
`pip install --require-hashes`, then the project itself without dependencies.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from importlib import metadata

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT
from tests.deploy.helpers import clean_env

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME = ROOT / "requirements.txt"
DEV = ROOT / "requirements-dev.txt"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


def requirement_lines(path) -> list[str]:
    """Return the file's requirement lines with their continuations joined; no comments."""
    joined = path.read_text().replace("\\\n", " ")
    lines = (" ".join(line.split()) for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def pins(path) -> dict[str, str]:
    """Return {canonical name: version} of the lock file; fail on a line that is no hashed pin."""
    found = {}
    for line in requirement_lines(path):
        requirement, *hashes = line.split(" ")
        match = PIN.match(requirement)
        assert match, f"{path.name}: {line!r} is not NAME==VERSION"
        assert hashes, f"{path.name}: {requirement} has no hash"
        assert all(HASH.match(item) for item in hashes), f"{path.name}: {line!r}"
        found[canonicalize_name(match["name"])] = match["version"]
    return found


def declared(*, dev: bool) -> list[Requirement]:
    """Return pyproject's runtime requirements, plus the dev extra's when `dev`."""
    project = PYPROJECT["project"]
    names = list(project["dependencies"])
    if dev:
        names += project["optional-dependencies"]["dev"]
    return [Requirement(name) for name in names]


def extras_needs(requirement: Requirement) -> set[str]:
    """Return what the requirement's extras add, read from the installed package's metadata."""
    needs = set()
    for extra in requirement.extras:
        for line in metadata.requires(requirement.name) or []:
            needed = Requirement(line)
            marker = needed.marker or Marker("extra == 'none'")
            if "extra" in str(marker) and marker.evaluate({"extra": extra}):
                needs.add(canonicalize_name(needed.name))
    return needs


@pytest.mark.parametrize(("lock", "dev"), [(RUNTIME, False), (DEV, True)])
def test_lock__pins_every_declared_dependency_and_what_its_extras_add(lock, dev):
    pinned = pins(lock)

    for requirement in declared(dev=dev):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock.name} lacks {name}: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock.name} pins {name}=={pinned[name]}, outside {requirement.specifier}"
        )
        missing = extras_needs(requirement) - pinned.keys()
        assert not missing, f"{lock.name} lacks {sorted(missing)} for {requirement}"


def test_lock__dev_pins_the_runtime_packages_at_the_same_versions():
    runtime, dev = pins(RUNTIME), pins(DEV)

    assert {name: dev.get(name) for name in runtime} == runtime


@pytest.mark.parametrize("lock", [RUNTIME, DEV], ids=["runtime", "dev"])
def test_lock__names_no_index_link_or_path_of_the_machine_that_wrote_it(lock):
    text = lock.read_text()

    for line in text.splitlines():
        option = line.strip().split(" ")[0]
        assert not option or option.startswith(("#", "--hash=")) or PIN.match(option), line
        assert not re.search(r"index-url|find-links|trusted-host|://|(^|\s|=)/", line), line
    assert "make lock" in text  # the header names the command that rewrites it


def test_lock__the_installed_packages_are_the_pinned_ones():
    for name, version in pins(DEV).items():
        if name in ("pip", "setuptools"):
            continue  # the virtualenv's own; pinned for pip-tools
        assert metadata.version(name) == version, f"{name}: run `make install`"


def make_dry_run(*args: str) -> str:
    """Return the commands `make -n` would run in the repository for these arguments."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@needs_make
def test_make_install__installs_the_dev_lock_by_hash_then_the_project_when_it_changes():
    commands = make_dry_run("-W", "requirements-dev.txt", "install")

    assert "install --quiet --require-hashes -r requirements-dev.txt" in commands
    assert "install --quiet --no-deps -e ." in commands
    assert commands.index("requirements-dev.txt") < commands.index("--no-deps -e .")


@needs_make
def test_make_run__installs_the_runtime_lock_and_passes_host_and_port():
    default = make_dry_run("-W", "requirements.txt", "run")
    chosen = make_dry_run("run", "HOST=0.0.0.0", "PORT=8001")

    assert "install --quiet --require-hashes -r requirements.txt" in default
    assert "requirements-dev.txt" not in default
    assert "manage.py runlocal --host 127.0.0.1 --port 8000" in default
    assert "manage.py runlocal --host 0.0.0.0 --port 8001" in chosen
