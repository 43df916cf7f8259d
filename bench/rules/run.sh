#!/bin/bash
# Whole-process timings of `fastseg run` with rule aggregates, beside a plain Polars script
# computing the same five forms (bench/rules/polars_forms.py). Spawn to exit, /usr/bin/time;
# the configurations alternate; the first round is a warm-up (Numba cache), then 3 timed.
#   bench/rules/run.sh ORDERS.parquet [SRC_DIR]   (SRC_DIR: a checkout to time, default .)
set -euo pipefail
F=$1
SRC=${2:-$(pwd)}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
run() { local label=$1; shift
  /usr/bin/time -f "$label %e s %M KB" env PYTHONPATH="$SRC" python "$@" 2>&1 >/dev/null | tail -1; }
for rep in 0 1 2 3; do
  for rules in plain both forms top; do
    rm -rf "$OUT/$rules"
    run "fastseg-$rules" -m fastseg run "$F" --no-builtin --rules "$HERE/$rules.toml" --out "$OUT/$rules" -q
  done
  (cd "$OUT" && run polars-forms "$HERE/polars_forms.py" "$F")
done
