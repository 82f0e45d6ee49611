"""Every environment variable batchsite reads is in deploy/.env.example and the README's table.

The variables are found by reading the source with `ast`: every `os.environ.get(NAME)`,
`os.environ[NAME]`, `os.getenv(NAME)` and call of a batchsite.env reader (`env_int(NAME,
...)`) in the settings, the apps and deploy/gunicorn.conf.py. A read whose name the test
cannot work out fails it too, so a new setting cannot slip past by being read indirectly.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from batchsite import env
from tests.conftest import ROOT
from tests.deploy.helpers import DEPLOY

ENV_EXAMPLE = DEPLOY / ".env.example"
README = ROOT / "README.md"
# batchsite.env's readers: each takes the variable's name first, and most a default second.
READERS = {name for name in dir(env) if name.startswith("env_")}
DIRECT = {"os.environ.get", "os.getenv"}
# A variable line of .env.example: NAME=value, or #NAME=default when left at its default.
EXAMPLE_LINE = re.compile(r"^(?P<off>#?)(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def sources() -> list[Path]:
    """Return the modules that may read the environment (batchsite.env only defines readers)."""
    found = [DEPLOY / "gunicorn.conf.py"]
    for package in ("batchsite", "batches", "jobs"):
        found += sorted((ROOT / package).rglob("*.py"))
    return [path for path in found if path != ROOT / "batchsite" / "env.py"]


def reads(path: Path) -> tuple[dict[str, ast.expr | None], list[str]]:
    """Return {name: default expression or None} read in `path`, and reads not understood.

    A name may be a string constant, or the variable of a `for` loop over a tuple of string
    constants (as settings.py reads Django's EMAIL_* settings).
    """
    tree = ast.parse(path.read_text())
    loops = {
        node.target.id: [e.value for e in node.iter.elts if isinstance(e, ast.Constant)]
        for node in ast.walk(tree)
        if isinstance(node, ast.For)
        and isinstance(node.target, ast.Name)
        and isinstance(node.iter, ast.Tuple | ast.List)
    }
    found: dict[str, ast.expr | None] = {}
    unknown: list[str] = []

    def record(name_node: ast.expr, default: ast.expr | None, line: int) -> None:
        if isinstance(name_node, ast.Constant) and isinstance(name_node.value, str):
            names = [name_node.value]
        elif isinstance(name_node, ast.Name) and name_node.id in loops:
            names, default = loops[name_node.id], None
        else:
            unknown.append(f"{path.relative_to(ROOT)}:{line}")
            return
        for name in names:
            found.setdefault(name, default)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            called = ast.unparse(node.func)
            if called in DIRECT or called in READERS:
                default = node.args[1] if len(node.args) > 1 else None
                record(node.args[0], default, node.lineno)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and ast.unparse(node.value) == "os.environ"
        ):
            record(node.slice, None, node.lineno)
    return found, unknown


def variables() -> dict[str, ast.expr | None]:
    """Return every variable read, with the default expression of its first read."""
    found: dict[str, ast.expr | None] = {}
    unknown: list[str] = []
    for path in sources():
        names, puzzles = reads(path)
        for name, default in names.items():
            found.setdefault(name, default)
        unknown += puzzles
    assert unknown == [], f"reads of the environment this test cannot name: {unknown}"
    return found


def example() -> dict[str, tuple[bool, str]]:
    """Return .env.example's variables as {name: (left at its default, value)}."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = EXAMPLE_LINE.match(line)
        if match:
            assert match["name"] not in found, f"{match['name']} twice in .env.example"
            found[match["name"]] = (match["off"] == "#", match["value"])
    return found


def readme_table() -> set[str]:
    """Return the variables named in the first column of the README's configuration table."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first))
    return names


def literal(default: ast.expr) -> str | None:
    """Return a default as .env.example writes it, or None when it is not a constant."""
    try:
        # Constants and arithmetic on them only (2 * 1024**3), nothing with a name in it.
        if any(isinstance(node, ast.Name | ast.Call | ast.Attribute) for node in ast.walk(default)):
            return None
        value = eval(compile(ast.Expression(default), "<default>", "eval"), {"__builtins__": {}})
    except Exception:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def test_variables__the_scan_finds_the_settings_it_must():
    # Guards the tests below against a scan that found next to nothing.
    found = variables()

    assert {"DATABASE_URL", "BATCHSITE_WORKERS", "EMAIL_HOST", "BATCHSITE_BIND"} <= set(found)
    assert len(found) > 60


def test_env_example__lists_every_variable_read():
    missing = sorted(set(variables()) - set(example()))

    assert missing == [], f"add these to deploy/.env.example: {missing}"


def test_env_example__lists_nothing_that_is_not_read():
    stale = sorted(set(example()) - set(variables()))

    assert stale == [], f"deploy/.env.example lists variables nothing reads: {stale}"


def test_env_example__a_commented_out_line_shows_the_default():
    wrong = {}
    for name, default in variables().items():
        off, value = example().get(name, (False, ""))
        written = literal(default) if default is not None else None
        if off and written is not None and value != written:
            wrong[name] = (value, written)

    assert wrong == {}, f"(.env.example, code) defaults differ: {wrong}"


def test_readme__the_configuration_table_names_every_variable_read():
    missing = sorted(set(variables()) - readme_table())

    assert missing == [], f"add these to the README's configuration table: {missing}"
