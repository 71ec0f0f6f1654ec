"""The folder layout is the architecture: imports point one way (models <- streams <- agents / api)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> packages of this project it must never import
FORBIDDEN = {
    "models": {"streams", "agents", "api", "simulator", "tools"},
    "streams": {"agents", "api", "simulator", "tools"},
    "agents": {"api", "simulator", "tools"},
    "api": {"agents", "simulator", "tools", "faust"},
    "simulator": {"streams", "agents", "api", "tools"},
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if imported_roots(path) & FORBIDDEN[package]
    }
    assert not offenders


def test_streams_topics_stays_free_of_faust() -> None:
    """The API imports the topic names; that must not drag the Faust app in."""
    assert "faust" not in imported_roots(ROOT / "streams" / "topics.py")
