"""The import graph of the project's own packages, read from the source: no cycle anywhere
(imports inside functions count: a cycle hidden in a function is still a cycle), no service
imports the example, the library imports no service, and the product's command neither the
development stack nor the example."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import project_modules

SERVICES = ("millrace_featurizer", "millrace_trainer", "millrace_predictor", "millrace_registry")
EXAMPLES = ("millrace_flights",)


def _under_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name | ast.Attribute) and "TYPE_CHECKING" in ast.unparse(
        node.test
    )


def imported(path: Path, name: str, known: dict[str, Path]) -> Iterator[str]:
    """The project's modules ``name`` imports (``from a import b`` is ``a.b`` if that is a
    module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _under_type_checking(node)
        for n in ast.walk(node)
    }  # fmt: skip
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import submodule` runs the package's __init__ first, as every
            # import of a submodule does: that is not a cycle, only what it names is.
            targets = [f"{base}.{alias.name}" for alias in node.names]
            if not all(t in known for t in targets):
                targets.append(base)
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = project_modules()
    return {name: set(imported(path, name, known)) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read(graph):
    assert "millrace.kafka" in graph["millrace_featurizer.live"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_each_layer_imports_only_the_layers_below_it(graph):
    above = {
        "millrace": (*SERVICES, "millrace_cli", "millrace_stack", *EXAMPLES),
        **{service: ("millrace_cli", "millrace_stack", *EXAMPLES) for service in SERVICES},
        "millrace_cli": ("millrace_stack", *EXAMPLES),
    }
    for name, targets in graph.items():
        forbidden = above.get(name.split(".")[0], ())
        assert not {t for t in targets if t.startswith(forbidden)}, name
