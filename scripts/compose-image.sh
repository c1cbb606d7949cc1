#!/usr/bin/env bash
# Builds the image `splitnets:local` from nothing (no registry, no base image): a root filesystem
# holding the release binaries (aggregator, sensor-node, splitnets-watch; debug info stripped),
# the ONNX Runtime library and the shared-library closure (ldd) of all of them, then
# `docker import`. Expects DOCKER_HOST (scripts/docker-engine.sh) and built binaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=/dev/null
source scripts/env.sh
log() { printf '[compose-image] %s\n' "$*" >&2; }

ROOTFS="$ROOT/.local/compose/rootfs"
BINS=(aggregator sensor-node splitnets-watch)
rm -rf "$ROOTFS"
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/usr/local/lib" "$ROOTFS/tmp" "$ROOTFS/etc"
chmod 1777 "$ROOTFS/tmp"   # a scratch filesystem has no /tmp
for b in "${BINS[@]}"; do
  [ -x "target/release/$b" ] || { log "target/release/$b missing: cargo build --release --bins"; exit 1; }
  strip -o "$ROOTFS/usr/local/bin/$b" "target/release/$b"
done
cp -L "$ORT_DYLIB_PATH" "$ROOTFS/usr/local/lib/libonnxruntime.so"
for f in "${BINS[@]/#/target/release/}" "$ORT_DYLIB_PATH"; do
  ldd "$f" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'
done | sort -u | while read -r lib; do
  cp -L --parents "$lib" "$ROOTFS"
done
printf 'hosts: files dns\n' > "$ROOTFS/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/nonexistent\n' > "$ROOTFS/etc/passwd"
size="$(du -sh "$ROOTFS" | cut -f1)"
tar -C "$ROOTFS" -c . | docker import \
  -c 'ENV ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so' \
  -m "SplitNets daemons built from $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  - splitnets:local >/dev/null
log "image splitnets:local built ($size root filesystem)"
