"""Product code never reaches the kit that drives the pipeline from outside (tools/kit), not even through another
module: the kit changes with the tests, the bench and the tools without touching what ships."""

from __future__ import annotations

from tests.unit.test_import_cycles import ROOT, import_graph

PRODUCT = ("models", "streams", "agents", "api", "simulator")


def test_no_product_module_reaches_the_kit() -> None:
    graph = import_graph(ROOT, (*PRODUCT, "tools"))
    reaches: dict[str, list[str]] = {}
    for start in (m for m in graph if m.split(".")[0] in PRODUCT):
        path, seen, todo = {start: [start]}, {start}, [start]
        while todo:
            module = todo.pop()
            for target in graph.get(module, ()):
                if target not in seen:
                    seen.add(target)
                    path[target] = [*path[module], target]
                    todo.append(target)
        kit = sorted(m for m in seen if m == "tools.kit" or m.startswith("tools.kit."))
        if kit:
            reaches[start] = path[kit[0]]
    assert not reaches, f"product modules that import the kit (module -> ... -> kit): {reaches}"
