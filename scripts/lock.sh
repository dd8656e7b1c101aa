#!/usr/bin/env bash
# Regenerate requirements.lock from requirements.txt in a throw-away venv (our own constraints file:
# Airflow's published constraints cannot be downloaded here). Usage: make lock
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --upgrade pip
"$tmp/venv/bin/pip" install -q -r requirements.txt
{
  echo "# Full resolved set for Python $(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'),"
  echo "# generated from requirements.txt by 'make lock' (scripts/lock.sh). Do not edit by hand."
  "$tmp/venv/bin/pip" freeze --exclude-editable | grep -vE '^(-e |pip==|setuptools==|wheel==)' | LC_ALL=C sort -f
} > requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
