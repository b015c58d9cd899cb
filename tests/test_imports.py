"""The module-level import graph of registry/, compress/ and kernels/: no cycles, no upward imports.

Imports that run when a module loads count: statements at module level (also inside a
module-level ``if``/``try``/``with``), not those inside functions or classes. Imports under
``if TYPE_CHECKING:`` are left out of the runtime graph; a second check adds them, since a
circle held together only for the type checker still ties two modules into one.
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``
itself, so a package ``__init__`` that re-exports its submodules is part of the graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The layers, lowest first: a package may import only from packages in layers below its own.
LAYERS = {"kernels": 0, "compress": 1, "registry": 2}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_imports(body: list[ast.stmt],
                    typing: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run at module load, in `body` and its module-level blocks;
    with `typing`, also those under ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if typing or not _is_type_checking(node.test):
                yield from _module_imports(node.body, typing)
            yield from _module_imports(node.orelse, typing)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_imports(block, typing)
            for handler in node.handlers:
                yield from _module_imports(handler.body, typing)
        elif isinstance(node, ast.With):
            yield from _module_imports(node.body, typing)


def _import_targets(name: str, path: Path, modules: dict[str, Path], typing: bool) -> set[str]:
    """The project modules that the module `name` (at `path`) imports at load time."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _module_imports(ast.parse(path.read_text(), filename=str(path)).body, typing):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        if node.level:
            anchor = name.split(".") if is_package else name.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in modules else base)
    return {target for target in targets if target in modules and target != name}


def _graph(typing: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _import_targets(name, path, modules, typing) for name, path in modules.items()}


def _package(module: str) -> str:
    return module.split(".", 1)[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def test_import_graph_sees_the_edges() -> None:
    # The walker itself: a graph without edges would pass every other test.
    graph = _graph()
    assert "registry.storage.s3.store" in graph["registry.storage.s3"]
    assert "compress.bitdelta.codec" in graph["compress.bitdelta"]  # an __init__ re-export
    assert "kernels.packing" in graph["compress.bitdelta.codec"]  # another package
    assert "compress.bitdelta.cpu_encoder" in graph["compress.bitdelta.codec"]  # a submodule


@pytest.mark.parametrize("typing", [False, True], ids=["runtime", "with-type-checking"])
def test_no_import_cycles_inside_a_package(typing: bool) -> None:
    graph = _graph(typing)
    within = {
        name: {target for target in targets if _package(target) == _package(name)}
        for name, targets in graph.items()
    }
    cycles = _cycles(within)
    assert not cycles, "import cycles (each a set of modules that import one another):\n" + (
        "\n".join(", ".join(cycle) for cycle in cycles))


@pytest.mark.parametrize("typing", [False, True], ids=["runtime", "with-type-checking"])
def test_no_upward_imports_between_packages(typing: bool) -> None:
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in _graph(typing).items()
        for target in targets
        if LAYERS[_package(target)] > LAYERS[_package(name)]
    )
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)
