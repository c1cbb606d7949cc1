#!/usr/bin/env bash
# The test suite, as CI runs it: set up (including the cargo tools it needs), build the daemons
# (the end-to-end tests spawn them), lint, check for unused dependencies, then every test with
# nextest (release profile: training and ONNX Runtime need it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./scripts/setup.sh
source scripts/env.sh
# Headless Chromium for the dashboard's browser test (tests only: the demo does not need it).
if ! command -v chromium >/dev/null 2>&1; then
  echo "[test] apt-get install chromium" >&2
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
for tool in cargo-nextest cargo-machete; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "[test] cargo install --locked $tool" >&2
    cargo install --locked --quiet "$tool"
  fi
done
# A Docker engine for the compose demo's test: a running one, or installed and started here.
DOCKER_HOST="$(./scripts/docker-engine.sh)"
export DOCKER_HOST
cargo fmt --all -- --check
cargo machete
cargo build --release --bins
cargo clippy --release --workspace --all-targets -- -D warnings
cargo nextest run --release --workspace --no-fail-fast "$@"
