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
#   MUTATION_FROM=HEAD ...                         # the committed files, not the working tree
#   MUTATION_RESUME=1 MUTATION_DIR=/tmp/my-run ... # go on with a stopped run in its folder (run it in slices)
#   MUTATION_RESUME=1 MUTATION_RECHECK=1 ...      # after adding tests: run the survivors again with them
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=${MUTATION_DIR:-$ROOT/.stack/mutation}
MUTATE=${MUTATE:-"streams/dedupe_decision.py streams/fan_out.py agents/maintenance.py streams/outcomes.py streams/markers.py streams/near_index.py streams/imaging.py streams/fetch.py api/tokens.py"}
JOBS=${MUTATION_JOBS:-2}
TESTS=${MUTATION_TESTS:-"tests/unit tests/agents tests/api"}

[[ -x .venv/bin/mutmut ]] || { echo "mutmut missing: .venv/bin/pip install -c constraints.txt -e '.[dev]'" >&2; exit 1; }

if [[ "${MUTATION_RESUME:-}" == 1 && -f "$RUN/setup.cfg" ]]; then
  # Go on with a run that was stopped (e.g. `timeout 600`): mutmut skips the mutants it has results for.
  names=()
  if [[ "${MUTATION_RECHECK:-}" == 1 ]]; then
    # Tests were added since: take the tests as they are now (the mutated modules must be unchanged), forget
    # which tests cover what, and run again only the mutants that survived (added tests kill, never revive).
    if [[ -n "${MUTATION_FROM:-}" ]]; then git archive "$MUTATION_FROM" tests | tar -xf - -C "$RUN"
    else tar --exclude='__pycache__' -cf - tests | tar -xf - -C "$RUN"; fi
    rm -f "$RUN/mutants/mutmut-stats.json"
    mapfile -t names < <(sed -n 's/^ *\([^ ]*\): \(survived\|no tests\)$/\1/p' "$RUN/results.txt")
  fi
  cd "$RUN"
  export APP_ENV=development
  export PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}"
  "$ROOT/.venv/bin/mutmut" run --max-children "$JOBS" "${names[@]}" || true
  "$ROOT/.venv/bin/mutmut" results --all true > "$RUN/results.txt" 2>&1 || true
  exec "$ROOT/.venv/bin/python" "${SCORE:-$ROOT/scripts/mutation_score.py}" "$RUN/results.txt"
fi
rm -rf "$RUN"
mkdir -p "$RUN"
# The repository's files (tests read docs and READMEs too); the photos are read in place.
# MUTATION_FROM=HEAD (or any commit) measures that commit's files instead of the working tree: other people's
# unfinished edits then change nothing.
if [[ -n "${MUTATION_FROM:-}" ]]; then
  git archive "$MUTATION_FROM" | tar -xf - -C "$RUN" --exclude='samples/*'
else
  git ls-files -co --exclude-standard | grep -v '^samples/' | while IFS= read -r f; do if [[ -e "$f" ]]; then echo "$f"; fi; done \
    | tar -cf - -T - | tar -xf - -C "$RUN"
fi
rm -rf "$RUN/samples"
ln -s "$ROOT/samples" "$RUN/samples"
# mutmut reads setup.cfg when pyproject.toml has no [tool.mutmut] section.
{
  echo "[mutmut]"
  echo "source_paths ="
  for f in $MUTATE; do echo "    $f"; done
  echo "also_copy ="
  for d in $(ls -A "$RUN"); do [[ $d == setup.cfg ]] || echo "    $d"; done
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
