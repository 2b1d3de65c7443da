#!/usr/bin/env bash
# tracked-binaries.sh [REPO]: fail when git tracks an executable binary
# (ELF), such as a stray `go build` output. Build outputs belong in bin/,
# which .gitignore lists. `make lint` runs this.
set -euo pipefail
cd "${1:-.}"
found=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  if [ "$(head -c 4 -- "$f" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; then
    echo "tracked binary (ELF): $f; remove it with \`git rm --cached $f\` and keep build outputs in bin/" >&2
    found=1
  fi
done < <(git ls-files -z)
exit "$found"
