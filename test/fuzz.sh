#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a bounded time each
# (default 20s; `make fuzz FUZZTIME=5m` for longer). New crashers are written
# to the package's testdata/fuzz and fail the run.
set -euo pipefail
fuzztime="${1:-20s}"
found=0
while IFS= read -r file; do
	pkg="./$(dirname "$file")"
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
		found=1
		echo "fuzz: $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
	done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' || true)
[ "$found" = 1 ] || echo "fuzz: no fuzz targets"
