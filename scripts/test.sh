#!/usr/bin/env bash
# The test command: install what is missing, start the real local stack, run every test, stop the stack.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap_venv.sh
bash scripts/install_chromium.sh
bash scripts/stack.sh install
if [[ ${KEEP_STACK:-0} != 1 ]]; then
  trap 'bash scripts/stack.sh down' EXIT
fi
bash scripts/stack.sh up

set +e
.venv/bin/python -m pytest "${@:-tests}"
status=$?
set -e
exit $status
