#!/usr/bin/env bash
# Rebuilds the committed demo bundle deploy/bundles/hand-designed-4view from scratch
# (~25 min on 2 cores). Deterministic inputs (seeded data order, cameras, initialisation).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./scripts/setup.sh
source scripts/env.sh
cargo build --release --bin splitnets-search
exec ./target/release/splitnets-search train --preset full --out deploy/bundles/hand-designed-4view \
  --report deploy/bundles/hand-designed-4view.train-report.json "$@"
