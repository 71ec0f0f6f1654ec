#!/usr/bin/env bash
# Mutation score of the modules that decide (docs/MUTATION.md), against the fast tests (no stack needed).
#
# mutmut runs in a snapshot of the tree under .stack/mutation/, so edits made while it runs (it takes a while)
# neither change what is measured nor collide with its copies. Not part of `make test`.
#   bash scripts/mutation.sh                      # every deciding module
#   MUTATE="api/tokens.py" bash scripts/mutation.sh   # some of them (one module per run keeps a run short)
#   MUTATION_TESTS="tests/unit" MUTATE=streams/imaging.py bash scripts/mutation.sh   # a subset of the tests only
#     (a subset kills no more mutants than all of them: its score is a lower bound of the fast tests' score)
#   MUTATION_DIR=/tmp/my-run MUTATION_JOBS=1 ...   # a run folder of one's own; one test process at a time
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=${MUTATION_DIR:-$ROOT/.stack/mutation}
MUTATE=${MUTATE:-"agents/dedupe.py agents/classify.py streams/outcomes.py streams/near_index.py streams/imaging.py streams/fetch.py api/tokens.py"}
JOBS=${MUTATION_JOBS:-2}
TESTS=${MUTATION_TESTS:-"tests/unit tests/agents tests/api"}

[[ -x .venv/bin/mutmut ]] || { echo "mutmut missing: .venv/bin/pip install -c constraints.txt -e '.[dev]'" >&2; exit 1; }

rm -rf "$RUN"
mkdir -p "$RUN"
# The packages the tests import, the tests and the pytest configuration; the photos are read in place.
tar --exclude='__pycache__' -cf - models streams agents api simulator tools tests pyproject.toml | tar -xf - -C "$RUN"
ln -s "$ROOT/samples" "$RUN/samples"
# mutmut reads setup.cfg when pyproject.toml has no [tool.mutmut] section.
{
  echo "[mutmut]"
  echo "source_paths ="
  for f in $MUTATE; do echo "    $f"; done
  echo "also_copy ="
  for d in models streams agents api simulator tools samples; do echo "    $d"; done
  echo "pytest_add_cli_args_test_selection ="
  for d in $TESTS; do echo "    $d"; done
  echo "pytest_add_cli_args ="
  echo "    -p"
  echo "    no:cacheprovider"
  echo "    -p"
  echo "    mutmut_pytest9"
} > "$RUN/setup.cfg"

cd "$RUN"
export APP_ENV=development
export PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}"
"$ROOT/.venv/bin/mutmut" run --max-children "$JOBS" || true
"$ROOT/.venv/bin/mutmut" results --all true > "$RUN/results.txt" 2>&1 || true
"$ROOT/.venv/bin/python" "${SCORE:-$ROOT/scripts/mutation_score.py}" "$RUN/results.txt"
