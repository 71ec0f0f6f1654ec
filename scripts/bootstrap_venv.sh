#!/usr/bin/env bash
# Create .venv and install the project with the pinned versions of constraints.txt.
# Re-runs are cheap: nothing is reinstalled unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_BIN=${PYTHON_BIN:-python3}
STAMP=.venv/.installed

command -v "$PYTHON_BIN" >/dev/null || { echo "error: $PYTHON_BIN not found: install Python >= 3.11" >&2; exit 1; }
"$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "error: Python >= 3.11 is required ($("$PYTHON_BIN" --version))" >&2; exit 1; }

if [[ -f $STAMP && $STAMP -nt pyproject.toml && $STAMP -nt constraints.txt ]]; then
  exit 0
fi
# A venv whose creation failed half-way (no pip in it) is made again.
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  if ! "$PYTHON_BIN" -m venv .venv >/dev/null 2>&1; then
    # Debian's and Ubuntu's system Python ship venv (and the pip it installs) separately.
    rm -rf .venv
    echo "python venv module missing: installing python3-venv" >&2
    command -v apt-get >/dev/null || { echo "error: install Python's venv module (the python3-venv package), then run: make venv" >&2; exit 1; }
    [[ $(id -u) -eq 0 ]] || { echo "error: run as root, or first: sudo apt-get install -y python3-venv" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv ca-certificates >/dev/null
    "$PYTHON_BIN" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
touch "$STAMP"
echo "python environment ready: .venv ($(.venv/bin/python --version))"
