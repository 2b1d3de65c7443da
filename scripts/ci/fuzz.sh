#!/usr/bin/env bash
# fuzz.sh PKG TARGET TIME: go test -fuzz TARGET for TIME in PKG. Go 1.26's
# fuzz coordinator can fail a target with a bare "context deadline
# exceeded" at the -fuzztime boundary, with no failing input
# (golang/go#75804, fixed in Go 1.27). Such a run is tried once more;
# anything else (a failing input written, a panic, a t.Error) fails at once.
set -uo pipefail
pkg=$1 target=$2 time=$3
run() { go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" "$pkg" 2>&1 | tee "$log"; return "${PIPESTATUS[0]}"; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run && exit 0
if grep -q 'context deadline exceeded' "$log" && ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"; then
  echo "fuzz.sh: $target hit Go's fuzz-time deadline race (golang/go#75804), no failing input: once more"
  run && exit 0
fi
exit 1
