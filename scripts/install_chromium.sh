#!/usr/bin/env bash
# Chromium for the browser tests, driven by Playwright: Debian's package (/usr/bin/chromium). Where the
# distribution has no working Chromium package (Ubuntu ships it only as a snap, which needs snapd), Playwright's
# own Chromium build is installed instead (`playwright install --with-deps chromium`; tests/browser/conftest.py
# uses it when /usr/bin/chromium is missing). CHROMIUM=/path/to/chrome makes the tests use any other build.
# Idempotent: does nothing when a working Chromium is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

works() { [[ -x $1 ]] && "$1" --headless --no-sandbox --version >/dev/null 2>&1; }

if [[ -n ${CHROMIUM:-} ]]; then
  works "$CHROMIUM" || { echo "error: CHROMIUM=$CHROMIUM does not run" >&2; exit 1; }
  exit 0
fi
if works /usr/bin/chromium; then
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "error: run as root (or install sudo) to install chromium: apt-get install -y chromium" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
. /etc/os-release 2>/dev/null || true
if [[ ${ID:-} != ubuntu ]] && command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq
  if $SUDO apt-get install -y -qq chromium >/dev/null && works /usr/bin/chromium; then
    /usr/bin/chromium --version
    exit 0
  fi
  echo "chromium: the distribution's package did not give a working /usr/bin/chromium" >&2
fi
# Ubuntu (snap-only Chromium) or no package: Playwright's build, its system libraries from apt.
[[ -x .venv/bin/python ]] || bash scripts/bootstrap_venv.sh
echo "chromium: installing Playwright's Chromium build (playwright install --with-deps chromium)" >&2
$SUDO .venv/bin/python -m playwright install --with-deps chromium || {
  echo "error: no Chromium could be installed. Install one (Debian: apt-get install chromium; Ubuntu: snap install chromium)" \
       "and run the tests with CHROMIUM=/path/to/chromium (e.g. CHROMIUM=/snap/bin/chromium)" >&2
  exit 1
}
