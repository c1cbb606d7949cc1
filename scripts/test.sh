#!/usr/bin/env bash
# The test suite, as CI runs it: set up, build the daemons (the end-to-end tests spawn them),
# lint, then every test with nextest (release profile: training and ONNX Runtime need it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./scripts/setup.sh
source scripts/env.sh
cargo fmt --all -- --check
cargo build --release --bins
cargo clippy --release --workspace --all-targets -- -D warnings
cargo nextest run --release --workspace --no-fail-fast "$@"
