"""The direction of imports (docs/design.md, "The direction of imports"), checked on the
source: ``services -> events <- workers``; ``events/`` imports neither Falcon nor Celery;
no import circle among the modules of ``events/``; no private name (leading underscore)
imported from another module of ``events/``.

Every import counts, at module level or inside a function (a deferred import is still a
dependency), including ``if TYPE_CHECKING:`` blocks.

Run as a script to print the import graph's cycles and private imports:
``.venv/bin/python tests/unit/test_import_layers.py``.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"events": "oauthledger.events", "services": "oauthledger.services",
            "workers": "oauthledger.workers"}


@dataclass(frozen=True)
class Import:
    """One imported module (and the name taken from it, for ``from m import name``)."""

    importer: str
    module: str
    name: str | None
    line: int


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" not in path.parts:
                out[_module_name(path)] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(module, alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:  # "from package import module"
                    out.append(Import(module, sub, None, node.lineno))
                else:
                    out.append(Import(module, base, alias.name, node.lineno))
    return out


IMPORTS = {module: _imports(module, path) for module, path in MODULES.items()}


def _graph(prefix: str) -> dict[str, set[str]]:
    """Module -> the modules under ``prefix`` it imports."""
    return {m: {i.module for i in imps if i.module.startswith(prefix) and i.module != m}
            for m, imps in IMPORTS.items() if m.startswith(prefix)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted:
    every import circle lies within one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _describe(imps: list[Import]) -> list[str]:
    return [f"{MODULES[i.importer].relative_to(ROOT)}:{i.line}: {i.module}"
            + (f" ({i.name})" if i.name else "") for i in imps]


def private_imports(prefix: str) -> list[Import]:
    """``from m import _name`` where ``m`` is another module under ``prefix``."""
    return [i for imps in IMPORTS.values() for i in imps
            if i.importer.startswith(prefix) and i.module.startswith(prefix)
            and i.name is not None and i.name.startswith("_") and i.module != i.importer]


def test_the_scan_sees_the_packages() -> None:
    """The checks below are not vacuous: the scan finds the modules and their imports."""
    assert {"oauthledger.events.state", "oauthledger.events.rebuild",
            "oauthledger.services.ledger", "oauthledger.workers.tasks"} <= set(MODULES)
    assert "oauthledger.events.store" in _graph("oauthledger.events.")[
        "oauthledger.events.state"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_events_modules() -> None:
    assert cycles(_graph("oauthledger.events.")) == []


def test_no_private_name_imported_across_events_modules() -> None:
    assert _describe(private_imports("oauthledger.events.")) == []


@pytest.mark.parametrize(("importer", "forbidden"), [
    ("oauthledger.events", ("oauthledger.services", "oauthledger.workers", "falcon",
                            "celery")),
    ("oauthledger.services", ("oauthledger.workers",)),
    ("oauthledger.workers", ("oauthledger.services",)),
])
def test_layers(importer: str, forbidden: tuple[str, ...]) -> None:
    bad = [i for m, imps in IMPORTS.items() if m == importer or m.startswith(importer + ".")
           for i in imps if any(i.module == f or i.module.startswith(f + ".")
                                for f in forbidden)]
    assert _describe(bad) == []


if __name__ == "__main__":
    for prefix in PACKAGES.values():
        for component in cycles(_graph(prefix + ".")):
            print("cycle:", " <-> ".join(component))
        for line in _describe(private_imports(prefix + ".")):
            print("private import:", line)
    sys.exit(0)
