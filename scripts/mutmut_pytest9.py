"""pytest plugin for mutmut 3.7 under pytest 9: mutmut reads ``item._nodeid``, which pytest 9 renamed.

Loaded only by scripts/mutation.sh (``-p mutmut_pytest9``); remove it once mutmut reads ``item.nodeid``.
"""

from __future__ import annotations

from typing import Any


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        if not hasattr(item, "_nodeid"):
            item._nodeid = item.nodeid
