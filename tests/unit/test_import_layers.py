"""The import graph: packages import only what is below them, and no module reaches itself.

Imports point down: orchestrator -> actors -> fleet/store/cloud/telemetry -> config (DESIGN.md);
`sim` builds on fleet, `worker` (what runs in a pod) on store and telemetry, `cloud` counts its
errors in telemetry's metrics. Imports inside
functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What each package may import besides itself.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "fleet": {"config"},
    "telemetry": {"config"},
    "cloud": {"config", "telemetry"},  # counts its retried and swallowed errors in telemetry's metrics
    "store": {"config", "fleet"},
    "sim": {"config", "fleet"},
    "worker": {"config", "fleet", "store", "telemetry"},
    "actors": {"config", "fleet", "store", "cloud", "telemetry"},
    "orchestrator": {"config", "fleet", "store", "cloud", "telemetry", "sim", "actors", "worker"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules `path` imports (absolute names), anywhere in the file. `from pkg import mod`
    is an import of `pkg.mod` (and of `pkg` only when a name is not a module of it)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name in known and name != module}


def _modules() -> dict[str, set[str]]:
    paths = [path for package in ALLOWED for path in sorted((ROOT / package).rglob("*.py"))]
    known = {_module_name(path) for path in paths}
    return {_module_name(path): _imports(path, known) for path in paths}


def test_packages_import_only_what_is_below_them() -> None:
    wrong = []
    for module, imports in _modules().items():
        package = module.split(".")[0]
        for imported in imports:
            target = imported.split(".")[0]
            if target != package and target not in ALLOWED[package]:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_imports_itself_through_others() -> None:
    graph = _modules()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for nxt in sorted(graph[module]):
            # importing a package runs its __init__, not its submodules: only real edges count
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
