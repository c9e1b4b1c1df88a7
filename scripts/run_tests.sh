#!/usr/bin/env bash
# Run the test suite against the real local services. Pytest's exit code 5 (no tests
# collected) is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest tests --durations=25 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
