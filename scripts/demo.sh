#!/usr/bin/env bash
# The multi-camera demo on a fresh machine: set up, build, run an aggregator and 4 sensors on
# loopback over the embedded default bundle, print predictions, accuracy, latency and link bytes.
# Extra arguments go to splitnets-demo (e.g. --frames 1000 --fps 60 --sensors 3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./scripts/setup.sh
source scripts/env.sh
echo "[demo] building (release) ..." >&2
cargo build --release --quiet --bins
exec ./target/release/splitnets-demo "$@"
