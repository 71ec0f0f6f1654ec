"""Offline checks of infra/ and monitoring/: the HCL parsed with python-hcl2, and the tools `make test` builds.

The tools (tofu, promtool: built with `go install` by scripts/stack.sh install into .stack/bin; checkov: a venv of
its own in .stack/checkov, pinned by infra/checkov-requirements.txt) are looked up here. Where one is missing the
test is skipped, except under CI or INFRA_TOOLS_REQUIRED=1, where a missing tool fails it: `make test` installs them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STACK_DIR = Path(os.environ.get("STACK_DIR", REPO / ".stack"))
if not STACK_DIR.is_absolute():
    STACK_DIR = REPO / STACK_DIR


def find_tool(name: str, *candidates: Path) -> Path:
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return Path(found)
    message = f"{name} not installed (scripts/stack.sh install builds it into {STACK_DIR / 'bin'})"
    if os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("INFRA_TOOLS_REQUIRED") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def tofu_bin() -> Path:
    return find_tool("tofu", STACK_DIR / "bin" / "tofu")


@pytest.fixture(scope="session")
def promtool_bin() -> Path:
    return find_tool("promtool", STACK_DIR / "bin" / "promtool")


@pytest.fixture(scope="session")
def checkov_bin() -> Path:
    return find_tool("checkov", STACK_DIR / "checkov" / "bin" / "checkov")
