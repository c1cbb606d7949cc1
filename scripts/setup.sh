#!/usr/bin/env bash
# Makes a fresh Debian machine ready to build, run and test SplitNets. Idempotent: every step
# checks before it acts, so running it twice costs seconds.
#
#   - Debian: the Fashion-MNIST data set (dataset-fashion-mnist), unzip.
#   - ONNX Runtime shared library, taken from the PyPI onnxruntime wheel (no CDN downloads),
#     unpacked to .local/onnxruntime/ ; scripts/env.sh exports ORT_DYLIB_PATH to it.
#   - Python packages used only by tests: onnx (checker, extract_model, real topologies),
#     grpcio-tools (cross-language check of the wire contract), numpy.
#   - promtool (test only), unpacked from Debian's prometheus package to .local/prometheus/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORT_VERSION="1.31.1"
ORT_DIR="$ROOT/.local/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
PY="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

need_apt=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
command -v unzip >/dev/null || need_apt+=(unzip)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || {
  log "Fashion-MNIST not found under /usr/share/datasets/fashion-mnist after install"; exit 1; }

if [ ! -f "$ORT_LIB" ]; then
  log "fetching ONNX Runtime $ORT_VERSION from the PyPI wheel"
  tmp="$(mktemp -d)"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: "onnxruntime==$ORT_VERSION" -d "$tmp"
  mkdir -p "$ORT_DIR"
  unzip -q -o -j "$tmp"/onnxruntime-*.whl "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" -d "$ORT_DIR"
  rm -rf "$tmp"
fi
log "ONNX Runtime: $ORT_LIB"

# promtool (test-only): lints the daemons' /metrics. From Debian's prometheus package, unpacked
# (not installed: no service is started).
PROMTOOL="$ROOT/.local/prometheus/promtool"
if [ ! -x "$PROMTOOL" ]; then
  log "fetching promtool from Debian's prometheus package"
  tmp="$(mktemp -d)"
  (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; })
  dpkg -x "$tmp"/prometheus_*.deb "$tmp/root"
  mkdir -p "$(dirname "$PROMTOOL")"
  cp "$tmp/root/usr/bin/promtool" "$PROMTOOL"
  rm -rf "$tmp"
fi

if ! "$PY" -c 'import onnx, grpc_tools, numpy' 2>/dev/null; then
  log "pip install onnx grpcio-tools numpy (test-only helpers)"
  "$PY" -m pip install --quiet --disable-pip-version-check "onnx==1.23.*" "grpcio-tools" "numpy"
fi
log "ready"
