#!/usr/bin/env bash
# Debian's Chromium for the browser tests (Playwright drives it; Playwright's own browser download is not used).
# Idempotent: does nothing when /usr/bin/chromium is already there.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "error: /usr/bin/chromium is missing and apt-get is not available" >&2; exit 1; }
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "error: run as root (or install sudo) to install chromium" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version
