#!/usr/bin/env bash
# Run the test suite against the real local services. Pytest's exit code 5 (no tests
# collected) is a failure here, never a silent pass.
#
# With no arguments (the README's command, CI): the tests marked `wallclock` — their length
# is set by waiting (a 3-minute broker outage, a steady trickle), not by CPU — run in a
# second pytest process beside the rest, and their report is printed after it. Both runs
# must pass and both must have collected tests. With arguments, one plain pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -gt 0 ]; then
  python3 -m pytest tests --durations=25 "$@"
  rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
  fi
  exit "$rc"
fi

log="$(mktemp -t skewless-wallclock-XXXXXX.log)"
python3 -m pytest tests -m wallclock -p no:cacheprovider --durations=10 >"$log" 2>&1 &
bg=$!
python3 -m pytest tests -m "not wallclock" --durations=25
rc=$?
wait "$bg"
bgrc=$?

echo
echo "=== the wallclock tests, run beside the others (pytest -m wallclock) ==="
cat "$log"
rm -f "$log"

status=0
for pair in "main:$rc" "wallclock:$bgrc"; do
  name="${pair%%:*}" code="${pair##*:}"
  if [ "$code" -eq 5 ]; then
    echo "error: the $name run collected no tests" >&2
    status=1
  elif [ "$code" -ne 0 ]; then
    echo "error: the $name run failed (pytest exit code $code)" >&2
    status=1
  fi
done
exit "$status"
