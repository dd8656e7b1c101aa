#!/usr/bin/env bash
# The README's test command (make test). Extra arguments go to pytest.
set -uo pipefail
python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi
exit $rc
