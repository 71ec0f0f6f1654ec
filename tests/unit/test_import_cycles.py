"""No import cycles between the project's modules: each module can be read (and loaded) after what it imports.

The graph is built from the source files with ``ast``, so nothing is imported to check it. Every import
counts, including those under ``if TYPE_CHECKING:`` and inside functions: a cycle hidden that way is still one
that a reader has to untangle, and it is how ``api.context``, ``api.admin`` and ``api.handlers`` once
imported each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "streams", "agents", "api", "simulator", "tools")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports (anywhere in its body)."""
    files = {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(_known(alias.name, files) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, is_package, node.module, node.level)
                for alias in node.names:  # `from pkg import mod` names a module; `from mod import thing` does not
                    targets.add(_known(f"{base}.{alias.name}", files) or _known(base, files))
        graph[name] = {t for t in targets if t}
    return graph


def _absolute(module: str, is_package: bool, target: str | None, level: int) -> str:
    if level == 0:
        return target or ""
    anchor = module.split(".") if is_package else module.split(".")[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, target] if target else anchor)


def _known(dotted: str, files: Mapping[str, Path]) -> str:
    """The longest prefix of ``dotted`` that is a project module ('' for anything else)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in files:
            return candidate
    return ""


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the longest import chain (tens)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_project_has_no_import_cycles() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert {"api.app", "streams.app", "models.settings"} <= graph.keys()  # the walk found the code
    assert cycles(graph) == []


def test_a_cycle_through_a_type_checking_import_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "context.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.admin import A\n"
    )
    (pkg / "admin.py").write_text("from .handlers import JOB_ID_RE\n")
    (pkg / "handlers.py").write_text("from pkg import context\nimport json\n")
    (pkg / "leaf.py").write_text("from . import context\n")
    assert cycles(import_graph(tmp_path, ["pkg"])) == [["pkg.admin", "pkg.context", "pkg.handlers"]]


def test_a_module_importing_itself_is_a_cycle() -> None:
    assert cycles({"a": {"a"}, "b": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
