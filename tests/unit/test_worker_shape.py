"""The worker stays easy to read: short agent functions, and no process state outside its context object.

State a worker process keeps (settings, clients, indexes, calls under way, markers, revocations, what its timers
remember) lives in :class:`streams.context.WorkerContext`; Faust declarations (app, topics, tables, agents) and
Prometheus metrics are module-level by design. Checked from the source with ``ast``: nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER_FILES = sorted([*(ROOT / "streams").glob("*.py"), *(ROOT / "agents").glob("*.py")])
MAX_AGENT_FUNCTION_LINES = 30
# Calls that make a mutable container or a synchronisation object.
_MUTABLE_CALLS = {"dict", "list", "set", "deque", "OrderedDict", "defaultdict", "Event", "Semaphore",
                  "Lock"}


def function_lengths(paths: list[Path]) -> list[tuple[int, str]]:
    """(lines, "path:line name") of every function, longest first (decorators not counted)."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                found.append((node.end_lineno - node.lineno + 1,
                              f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def test_agent_functions_are_short() -> None:
    too_long = [f for f in function_lengths(sorted((ROOT / "agents").glob("*.py"))) if f[0] > MAX_AGENT_FUNCTION_LINES]
    assert not too_long


def _mutable_value(value: ast.expr | None) -> bool:
    if isinstance(value, ast.Dict | ast.List | ast.Set | ast.DictComp | ast.ListComp | ast.SetComp):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name in _MUTABLE_CALLS
    return False


@pytest.mark.parametrize("path", WORKER_FILES, ids=[str(p.relative_to(ROOT)) for p in WORKER_FILES])
def test_no_module_level_mutable_state(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    offenders = [f"line {node.lineno}: global" for node in ast.walk(tree) if isinstance(node, ast.Global)]
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            name = target.id if isinstance(target, ast.Name) else ""
            constant = name.upper() == name  # UPPER_CASE: a constant by convention (a read-only table)
            if name and not constant and _mutable_value(node.value):  # type: ignore[union-attr]
                offenders.append(f"line {node.lineno}: {name}")
    assert not offenders
