"""Summarise ``mutmut results --all true``: killed / total per module and per function, and the survivors.

Usage: python scripts/mutation_score.py RESULTS_FILE  (scripts/mutation.sh writes it to .stack/mutation/results.txt)
A mutant counts as killed when a test failed or timed out with it; survivors and mutants no test reached count
against the score; mutants mutmut could not check (its own failures) are listed apart.
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

LINE = re.compile(r"^\s*(?P<module>[\w.]+)\.x_?(?P<function>\w+?)__mutmut_(?P<n>\d+): (?P<status>[\w ]+?)\s*$")
KILLED = {"killed", "timeout"}
LIVE = {"survived", "no tests"}


def main(path: str) -> int:
    per_module: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    per_function: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    survivors: list[str] = []
    for line in Path(path).read_text().splitlines():
        m = LINE.match(line)
        if not m:
            continue
        status = m["status"]
        module, function = m["module"], m["function"].lstrip("ǁ")
        per_module[module][status] += 1
        per_function[f"{module}.{function}"][status] += 1
        if status in LIVE:
            survivors.append(f"{module}.{function}__mutmut_{m['n']} ({status})")
    if not per_module:
        print(f"no mutants found in {path}")
        return 1
    total_killed = total_counted = 0
    print(f"{'module':32} {'killed':>7} {'total':>6} {'score':>6}   other")
    for module, counts in sorted(per_module.items()):
        killed = sum(counts[s] for s in KILLED)
        counted = killed + sum(counts[s] for s in LIVE)
        other = {s: n for s, n in counts.items() if s not in KILLED | LIVE}
        total_killed, total_counted = total_killed + killed, total_counted + counted
        print(f"{module:32} {killed:7} {counted:6} {killed / max(counted, 1):6.0%}   {other or ''}")
    print(f"{'all':32} {total_killed:7} {total_counted:6} {total_killed / max(total_counted, 1):6.0%}")
    print("\nfunctions with survivors:")
    for function, counts in sorted(per_function.items()):
        live = sum(counts[s] for s in LIVE)
        if live:
            killed = sum(counts[s] for s in KILLED)
            print(f"  {function:60} {killed}/{killed + live}")
    print(f"\nsurviving mutants ({len(survivors)}; `mutmut show NAME` in the run folder shows each):")
    for name in survivors:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
