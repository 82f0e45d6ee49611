"""Tests for the import rules: no cycle among `batches` modules; `jobs` never imports `batches`.

The graph is read from the source with `ast`, so no module is imported. An import inside a
function runs late, which can hide a cycle at import time but not in the design; such
imports are counted too, and each one is listed below with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("batches", "jobs", "batchsite")

# Imports of our own modules made inside a function, and why they cannot be at the top.
FUNCTION_LEVEL_IMPORTS = {
    # AppConfig.ready registers the schema extensions once the app registry is ready.
    ("batches.apps", "batches.api.schema"),
    ("batches.apps", "batches.engine.shutdown"),
    ("jobs.apps", "jobs.checks"),
    # The benchmark child process configures Django before it touches models and services.
    ("batchsite.bench.scenarios", "batches.models"),
    ("batchsite.bench.scenarios", "batches.services"),
    ("batchsite.bench.scenarios", "jobs"),
    ("batchsite.bench.scenarios", "jobs.echo"),
}


def modules() -> dict[str, Path]:
    """Return every module of our packages (migrations aside) by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def _known(name: str) -> str | None:
    """Return the module of ours that `name` (a module or a name in one) belongs to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package.pop()
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    # `from batches import engine` imports the module batches.engine, not just batches.
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        for alias in node.names
    ]


def imports(module: str) -> tuple[set[str], set[str]]:
    """Return the modules of ours that `module` imports at load time and inside functions."""
    top: set[str] = set()
    late: set[str] = set()

    def visit(body: list[ast.stmt], into: set[str]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        late.update(filter(None, map(_known, _targets(inner, module))))
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            elif isinstance(node, ast.Import | ast.ImportFrom):
                into.update(filter(None, map(_known, _targets(node, module))))
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    block = getattr(node, field, None)
                    if isinstance(block, list):
                        visit(block, into)

    visit(ast.parse(MODULES[module].read_text()).body, top)
    top.discard(module)
    late.discard(module)
    return top, late - top


GRAPH = {module: imports(module) for module in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                strong(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            strong(node)
    return found


def test_imports__batches_modules_import_no_cycle_at_load_time():
    edges = {m: {t for t in top if t.startswith("batches")} for m, (top, _) in GRAPH.items()}

    assert cycles(edges) == []


def test_imports__batches_modules_import_no_cycle_even_inside_functions():
    edges = {
        m: {t for t in top | late if t.startswith("batches")} for m, (top, late) in GRAPH.items()
    }

    assert cycles(edges) == []


def test_imports__function_level_imports_are_the_listed_few():
    late = {(m, t) for m, (_, targets) in GRAPH.items() for t in targets}

    assert late == FUNCTION_LEVEL_IMPORTS


def test_imports__jobs_never_imports_batches():
    offending = {
        (m, t)
        for m, (top, late) in GRAPH.items()
        if m.split(".")[0] == "jobs"
        for t in top | late
        if t.split(".")[0] == "batches"
    }

    assert offending == set()


def test_imports__the_graph_sees_the_engine():
    # Guards the rules above against a graph that found nothing to check.
    top, _ = GRAPH["batches.engine.finalize"]

    assert "batches.webhooks" in top
    assert len(MODULES) > 50


def test_locks__every_batch_row_lock_goes_through_for_update():
    # A plain FOR UPDATE on a batch blocks the foreign-key checks of workers' commits;
    # BatchQuerySet.for_update takes the lock that does not (see its docstring).
    offending = [
        name
        for name, path in MODULES.items()
        if name != "batches.models" and "Batch.objects.select_for_update" in path.read_text()
    ]

    assert offending == []
    assert "select_for_update(no_key=True)" in MODULES["batches.models"].read_text()
