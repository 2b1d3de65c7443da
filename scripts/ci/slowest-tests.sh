#!/usr/bin/env bash
# The ten slowest top-level tests of a `go test -v` log (`.ci/run` keeps
# one of `make test`): "seconds name", slowest first. docs/benchmarks.md
# records them for the last cold run.
#
# A test of the e2e parallel group waits at the group's gate after
# t.Parallel, and go test counts that wait in its time; the test logs it
# ("the parallel group starts it after 10m57s"), and it is taken off here,
# so that each test's own time is listed.
set -euo pipefail
log=${1:?usage: slowest-tests.sh GO-TEST-V-LOG}
awk '
  # seconds of a Go duration such as 1h2m3s, 10m57s or 1s
  function secs(d,   n, s) {
    s = 0
    while (match(d, /^[0-9.]+(h|m|s)/)) {
      n = substr(d, 1, RLENGTH - 1)
      u = substr(d, RLENGTH, 1)
      s += n * (u == "h" ? 3600 : u == "m" ? 60 : 1)
      d = substr(d, RLENGTH + 1)
    }
    return s
  }
  /^=== (RUN|CONT|NAME|PAUSE) / { cur = $3; next }
  /the parallel group starts it after [0-9hms.]+ / {
    match($0, /after [0-9hms.]+/)
    wait[cur] = secs(substr($0, RSTART + 6, RLENGTH - 6))
    next
  }
  /^--- (PASS|FAIL|SKIP): [A-Za-z0-9_]+ \([0-9.]+s\)$/ {
    t = $4; gsub(/[()s]/, "", t)
    printf "%.2f %s\n", t - wait[$3], $3
  }
' "$log" | sort -rn | head -n 10
