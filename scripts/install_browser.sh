#!/usr/bin/env bash
# Headless Chromium for the browser tests (tests/ui): Debian's chromium + chromium-driver packages, driven by
# Playwright with executable_path=/usr/bin/chromium (Playwright never downloads a browser here). Idempotent:
# does nothing when /usr/bin/chromium exists; uses sudo only when not root.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --version
