# Source this file: points the binaries and tests at the ONNX Runtime library setup.sh unpacked.
_splitnets_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$_splitnets_root/.local/onnxruntime/libonnxruntime.so.1.31.1}"
export SPLITNETS_PROMTOOL="${SPLITNETS_PROMTOOL:-$_splitnets_root/.local/prometheus/promtool}"
unset _splitnets_root
