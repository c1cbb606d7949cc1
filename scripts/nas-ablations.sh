#!/usr/bin/env bash
# The split-aware NAS's ablations (issue 12 item 7): the full method and one arm per switched-off
# part or narrowed space, each a supernet trained with the same (smaller) budget and searched
# the same way; then one table comparing the arms within common latency budgets.
#
#   scripts/nas-ablations.sh [--data fashion-mnist-4view] [--steps 400] [--out out/nas-ablations]
#
# Every arm resumes from its checkpoint if killed; finished arms are skipped on a rerun.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA=fashion-mnist-4view
STEPS=400
OUT=out/nas-ablations
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
source scripts/env.sh
BIN="${SPLITNETS_SEARCH_BIN:-./target/release/splitnets-search}"
[ -x "$BIN" ] || cargo build --release --quiet -p splitnets-search
ARMS=(
  "full:"
  "no-split-init:no-split-init"
  "no-split-sampling:no-split-sampling"
  "no-view-dropout:no-view-dropout"
  "bits-8:bits8"
  "bits-4:bits4"
  "bits-2:bits2"
  "fusion-max:fusion-max"
  "fusion-mean:fusion-mean"
  "fusion-learned:fusion-learned"
)
mkdir -p "$OUT/$DATA"
runs=()
for arm in "${ARMS[@]}"; do
  name="${arm%%:*}"; ablate="${arm#*:}"
  dir="$OUT/$DATA/$name"
  runs+=("$name=$dir")
  if [ -f "$dir/outcome.json" ]; then
    echo "[ablations] $name: done already ($dir)" >&2
    continue
  fi
  echo "[ablations] $name: training $STEPS steps + search ($(date +%T))" >&2
  args=(nas --data "$DATA" --preset quick --steps "$STEPS" --check-samples 200 --out "$dir")
  [ -n "$ablate" ] && args+=(--ablate "$ablate")
  "$BIN" "${args[@]}" > "$dir.log" 2>&1 || { mkdir -p "$dir"; echo "[ablations] $name failed: see $dir.log" >&2; exit 1; }
done
IFS=,; "$BIN" nas-compare --runs "${runs[*]}" --out "$OUT/$DATA/ablations.md"
