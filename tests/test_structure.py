"""The layering of the code, read with ``ast`` from the files (nothing is imported).

* no import cycle between modules, counting every import (function-local ones too, so a cycle
  cannot hide inside a function);
* the core never imports the application layer (``mstar_engine.app``) and the engine never
  imports click;
* no module over 400 lines;
* no comparison with a built-in family's name outside that family's module: what the tool knows
  about a family lives on its class.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mstar_engine", "mstar_cli")
MAX_LINES = 400
FAMILY_NAMES = {"gaussian", "beta", "dirichlet", "vmf", "von-mises", "wishart", "categorical", "gamma"}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The modules of this tree that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` where only a.b is ours
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_imports_and_finds_a_cycle():
    assert "mstar_engine.spec.schema" in GRAPH["mstar_engine.spec"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_core_never_imports_the_application_layer_or_click():
    offenders = []
    for name, imported in GRAPH.items():
        core = name.startswith("mstar_engine.") and not name.startswith("mstar_engine.app")
        if core:
            offenders += [f"{name} -> {target}" for target in imported if target.startswith("mstar_engine.app")]
    assert offenders == []
    for name, path in MODULES.items():
        if name.startswith("mstar_engine"):
            tree = ast.parse(path.read_text())
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not any(m == "click" or m.startswith("click.") for m in names), name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_400_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines; split it by concept"


def test_no_family_name_checks_outside_the_family_modules():
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                values = [node.left, *node.comparators]
                values += [e for v in node.comparators if isinstance(v, (ast.Tuple, ast.List, ast.Set)) for e in v.elts]
                for v in values:
                    if isinstance(v, ast.Constant) and v.value in FAMILY_NAMES and name != f"mstar_engine.families.{v.value.replace('-', '_')}":
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} compares with {v.value!r}")
    assert found == [], "\n".join(found)
