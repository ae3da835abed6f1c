"""No import circle among the project's packages, at module level or inside functions.

A function-level import hides a circle from Python (it runs late) but not from a reader:
``train`` needing ``assemble`` needing ``train`` is one room whichever line imports. So
the walk reads every ``import`` in the AST, wherever it sits (``TYPE_CHECKING`` blocks
included), and fails on any strongly connected group of modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("modelio", "trainer", "service", "ui")


def project_modules(root: Path = REPO) -> dict[str, Path]:
    """Dotted module name -> file, for every module of :data:`PACKAGES` under ``root``."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name an import statement in ``path`` can load, wherever it sits."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package that holds this module
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name that is not a module maps to the
    module that defines it: ``from trainer.predict import predict`` is trainer.predict)."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {name for name in imported_names(module, path) if name in modules}
        graph[module] = targets - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_packages_have_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40, "the walk found too few modules to mean anything"
    assert cycles(graph) == []


def test_the_walk_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """The check itself: a circle closed by an import inside a function is found."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "trainer" / "a.py").write_text("from trainer.b import thing\n")
    (tmp_path / "trainer" / "b.py").write_text(
        "thing = 1\n\ndef late():\n    from . import a\n    return a\n"
    )
    assert cycles(import_graph(tmp_path)) == [["trainer.a", "trainer.b"]]


def test_the_service_and_the_page_never_import_the_trainer() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith(("service", "ui", "modelio")):
            assert not {t for t in targets if t.startswith("trainer")}, module
