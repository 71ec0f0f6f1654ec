#!/usr/bin/env bash
# The test command: install what is missing, start the real local stack, run every test, stop the stack.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."
export APP_ENV=${APP_ENV:-development}   # test secrets are short; see README "Security"
# The Redis-backed tests run on a single Redis and on a Redis Cluster (ports 7000-7005, a second or two to start).
export STACK_REDIS_CLUSTER=${STACK_REDIS_CLUSTER:-1}
export INFRA_TOOLS_REQUIRED=${INFRA_TOOLS_REQUIRED:-1}   # tests/infra fail, not skip, when a checker is missing

bash scripts/bootstrap_venv.sh
bash scripts/install_chromium.sh
STACK_INFRA_TOOLS=${STACK_INFRA_TOOLS:-1} bash scripts/stack.sh install   # with the infra checkers (tests/infra)
if [[ ${KEEP_STACK:-0} != 1 ]]; then
  trap 'bash scripts/stack.sh down' EXIT
fi
# The main session without the S3 server's upload notifications: an upload's notification would queue its job
# (the storage-event trigger) and race every test that drives upload-complete itself. The trigger's own tests
# run in the isolated session below, with notifications on.
export STACK_STORAGE_EVENTS=0   # exported: the lifecycle tests of the main session run `stack.sh up` themselves
bash scripts/stack.sh up

if [[ $# -gt 0 ]]; then
  .venv/bin/python -m pytest "$@"   # not exec: the EXIT trap must still stop the stack
  exit $?
fi
# A worker and an API left running by `make demo` would answer the tests' events too (their own consumer group)
# and call the same simulator: the whole suite runs without them.
bash scripts/stack.sh app-down
# The lifecycle tests stop and restart the whole stack, and the worker-restart test must have the broker to
# its worker alone, so they run last, in a session of their own, after every test that holds a connection.
set +e
logs=${STACK_DIR:-.stack}/logs
started=$(mktemp)   # the digest below covers this run's logs only
.venv/bin/python -m pytest tests -m "not stack_lifecycle and not worker_restart and not isolated and not known_failing"
status=$?
export STACK_STORAGE_EVENTS=1   # the S3 server is restarted with its notifications (and the lifecycle tests keep them)
bash scripts/stack.sh up
.venv/bin/python -m pytest tests -m "(stack_lifecycle or worker_restart or isolated) and not known_failing"
lifecycle=$?
set -e
if [[ $status -ne 0 ]]; then
  # CI keeps only this output: end it with what the workers and services warned about, counted.
  for log in $(find "$logs" -maxdepth 1 -name '*.log' -newer "$started" \( -name 'worker-*' -o -name 'kafka.log' \)); do
    echo "=== warnings and errors in $log (count, message) ==="
    grep -E '\[(WARNING|ERROR)\]|WARN |ERROR ' "$log" | sed -E 's/^\[[^]]*\] (\[[0-9]+\] )?//; s/[0-9a-f]{8}-[0-9a-f-]{27}/<id>/g; s/[0-9a-f]{64}/<hash>/g' | cut -c1-160 \
      | sort | uniq -c | sort -rn | head -15 || true
  done
fi
rm -f "$started"
[[ $status -eq 0 && $lifecycle -eq 0 ]]
