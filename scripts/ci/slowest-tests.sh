#!/usr/bin/env bash
# The ten slowest top-level tests of a `go test -v` log (`.ci/run` keeps
# one of `make test`): "seconds name", slowest first. docs/benchmarks.md
# records them for the last cold run.
set -euo pipefail
log=${1:?usage: slowest-tests.sh GO-TEST-V-LOG}
grep -E '^--- (PASS|FAIL|SKIP): [A-Za-z0-9_]+ \([0-9.]+s\)$' "$log" |
  sed -E 's/^--- [A-Z]+: ([A-Za-z0-9_]+) \(([0-9.]+)s\)$/\2 \1/' |
  sort -rn | head -n 10
