#!/usr/bin/env bash
# Runs each cargo-fuzz target for N executions (default 1,000,000), seeded with the project's own
# valid inputs; prints executions, time and the outcome per target. Needs the nightly toolchain
# and cargo-fuzz (`cargo install --locked cargo-fuzz`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"
RUNS="${1:-1000000}"
mkdir -p corpus/frame_path corpus/bundle_manifest corpus/onnx_model
cp ../deploy/bundles/fashion-mnist-4view/bundle.toml corpus/bundle_manifest/demo.toml
cp ../deploy/bundles/fashion-mnist-4view/head.onnx corpus/onnx_model/head.onnx
cp ../deploy/bundles/fashion-mnist-4view/tail.onnx corpus/onnx_model/tail.onnx
for target in frame_path bundle_manifest onnx_model; do
  start=$(date +%s)
  cargo +nightly fuzz run --release "$target" "corpus/$target" -- -runs="$RUNS" -max_len=65536 \
    -timeout=5 2>&1 | tee "/tmp/fuzz-$target.log" | grep -E "^#[0-9]+ *DONE|Done [0-9]+ runs|ERROR|panicked" || true
  echo "[fuzz] $target: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "/tmp/fuzz-$target.log" || echo 'see log') (wall $(( $(date +%s) - start )) s; log /tmp/fuzz-$target.log)"
done
