#!/usr/bin/env bash
# ci-workflows.sh [DOC]: run actionlint (a Go module, pinned) on every
# GitHub Actions workflow in docs/ci.md. A block with `jobs:` is a whole
# workflow; a block of steps (lines starting `      - `) is checked inside
# a one-job workflow with a `cell` matrix, as the doc places it. Other
# blocks (envctl's own config.yaml) are not workflows. `make lint` runs this.
set -euo pipefail
doc=${1:-docs/ci.md}
actionlint=github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
wf="$dir/.github/workflows"
mkdir -p "$wf"
awk -v out="$wf" '
  /^```yaml$/ { n++; f = sprintf("%s/ci-md-block-%02d.yaml", out, n); inb = 1; next }
  /^```$/ && inb { inb = 0; close(f); next }
  inb { print > f }' "$doc"
checked=0
for f in "$wf"/*.yaml; do
  if grep -q '^jobs:' "$f"; then
    checked=$((checked + 1))
  elif grep -q '^      - ' "$f"; then
    { printf 'name: snippet\non: push\njobs:\n  snippet:\n    runs-on: ubuntu-24.04\n    strategy:\n      matrix:\n        cell: ["cri-tools=1.34.0"]\n    steps:\n'; cat "$f"; } > "$f.tmp"
    mv "$f.tmp" "$f"
    checked=$((checked + 1))
  else
    rm "$f"
  fi
done
[ "$checked" -gt 0 ] || { echo "ci-workflows: no workflow found in $doc" >&2; exit 1; }
root=$(pwd)
(cd "$dir" && git init -q . && GOFLAGS=-mod=mod go run "$actionlint" -no-color -shellcheck= -pyflakes=) ||
  { echo "ci-workflows: actionlint found the problems above in the workflows of $doc (block numbers count its \`\`\`yaml blocks)" >&2; exit 1; }
echo "ci-workflows: actionlint is clean on $checked workflows of ${doc#"$root"/}"
