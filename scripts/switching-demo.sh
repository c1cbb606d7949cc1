#!/usr/bin/env bash
# Live split switching under a bandwidth drop shaped by the kernel: four sensors, each in its own
# network namespace behind a `tc tbf` uplink (scripts/headset-netns.sh), run a bundle set of three
# variants of the demo network (float32, 8-bit and 4-bit features). The uplinks drop from
# 2 Mbit/s to 150 kbit/s at 5 s and recover at 12 s; the predictions (with the variant that made
# each frame) go to out/switching/predictions.jsonl and a summary is printed. Needs root.
#
#   scripts/switching-demo.sh [--seconds 20] [--drop-kbit 150] [--out out/switching]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_TOTAL=20; DROP=150; OUT=out/switching; FPS=30; PORT=50071
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_TOTAL=$2; shift 2 ;;
    --drop-kbit) DROP=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done
source scripts/env.sh
BIN=target/release
[ -x $BIN/aggregator ] || cargo build --release --bins
mkdir -p "$OUT"
SET="$OUT/set"
rm -rf "$SET"; mkdir -p "$SET"
for bits in 32 8 4; do
  $BIN/splitnets-search set-codec --bundle deploy/bundles/fashion-mnist-4view --bits $bits --out "$SET/b$bits" >/dev/null
done
printf '# best first\nvariants = ["b32", "b8", "b4"]\n' > "$SET/variants.toml"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/headset-netns.sh down
}
trap cleanup EXIT
scripts/headset-netns.sh down
scripts/headset-netns.sh up 4 2000
$BIN/aggregator --bundle "$SET" --listen 0.0.0.0:$PORT --admin-listen 127.0.0.1:0 --fusion-deadline-ms 200 \
  --log-format json > "$OUT/aggregator.log" 2>&1 &
pids+=($!)
sleep 2
T=$(( $(date +%s%3N) + 2000 ))
FRAMES=$(( SECONDS_TOTAL * FPS ))
for v in 0 1 2 3; do
  scripts/headset-netns.sh exec $v $BIN/sensor-node --bundle "$SET" --view $v \
    --aggregator http://10.77.$v.1:$PORT --fps $FPS --start-at-unix-ms $T --frames $FRAMES \
    --emulate-latency-ms 1 > "$OUT/sensor-$v.log" 2>&1 &
  pids+=($!)
done
$BIN/splitnets-watch --aggregator http://127.0.0.1:$PORT --count $FRAMES --json \
  > "$OUT/predictions.jsonl" 2>"$OUT/watch.log" &
watch_pid=$!
sleep $(( 2 + 5 )); scripts/headset-netns.sh rate all "$DROP"; echo "[demo] uplinks now $DROP kbit/s"
sleep 7; scripts/headset-netns.sh rate all 2000; echo "[demo] uplinks back to 2000 kbit/s"
wait $watch_pid || true
scripts/headset-netns.sh show > "$OUT/qdisc.txt"
python3 - "$OUT/predictions.jsonl" "$OUT/aggregator.log" <<'PY'
import json, sys
preds = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
preds = [p for p in preds if "sequence" in p]
runs = []
for p in sorted(preds, key=lambda p: p["sequence"]):
    if runs and runs[-1][0] == p["variant"]:
        runs[-1][2] = p["sequence"]
    else:
        runs.append([p["variant"], p["sequence"], p["sequence"]])
degraded = sum(1 for p in preds if p["views_missing"])
print(f"[demo] {len(preds)} predictions, {degraded} degraded; variant runs (variant, first, last): {runs}")
for l in open(sys.argv[2]):
    if "split switch" in l:
        e = json.loads(l); f = e.get("fields", e)
        print("[demo]", f.get("message"), {k: v for k, v in f.items() if k != "message"})
PY
