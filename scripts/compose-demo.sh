#!/usr/bin/env bash
# The multi-camera demo in containers: an aggregator, four sensors and a viewer, on a
# user-defined Docker network (deploy/compose/docker-compose.yml).
#
#   ./scripts/compose-demo.sh              # 300 frames per camera, a summary, then everything down
#   ./scripts/compose-demo.sh --frames 900
#   ./scripts/compose-demo.sh --keep       # runs until you take it down (the command is printed)
#   ./scripts/compose-demo.sh --down       # takes a kept demo down
#
# What it does: builds the release binaries; makes a Docker engine available
# (scripts/docker-engine.sh: an engine already running is used as it is); builds the image
# `splitnets:local` from nothing (no registry: a root filesystem of the binaries, ONNX Runtime
# and their shared libraries, `docker import`ed); brings the services up (sensors and viewer wait
# for the aggregator's gRPC health check); prints the viewer's predictions and its summary.
# The feature link runs mTLS with demo certificates (.local/compose/certs, made by
# splitnets-certs). Bundle, configuration, certificates and data set are mounted read-only; the daemons log JSON
# (`docker-compose -p splitnets -f deploy/compose/docker-compose.yml logs aggregator`). The
# aggregator is published on the host at 127.0.0.1:50051 (gRPC) and 127.0.0.1:9090 (the live
# dashboard at /, and /metrics);
# SPLITNETS_COMPOSE_GRPC_PORT, SPLITNETS_COMPOSE_ADMIN_PORT and SPLITNETS_COMPOSE_PROJECT
# change the ports and the project name.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FRAMES=300
KEEP=0
DOWN_ONLY=0
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --frames) FRAMES="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --down) DOWN_ONLY=1; shift ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "compose-demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { printf '[compose-demo] %s\n' "$*" >&2; }

STATE="$ROOT/.local/compose"
mkdir -p "$STATE"
DOCKER_HOST="$(./scripts/docker-engine.sh)"
export DOCKER_HOST
PROJECT="${SPLITNETS_COMPOSE_PROJECT:-splitnets}"
COMPOSE=(docker-compose -p "$PROJECT" -f deploy/compose/docker-compose.yml)
touch "$STATE/demo.env"   # compose reads it even to take things down

if [ "$DOWN_ONLY" = 1 ]; then
  "${COMPOSE[@]}" down --remove-orphans
  exit 0
fi

if [ "$BUILD" = 1 ]; then
  ./scripts/setup.sh
  # shellcheck source=/dev/null
  source scripts/env.sh
  log "building the release binaries"
  cargo build --release --bins --quiet
  ./scripts/compose-image.sh
fi

# The demo fleet's certificates (mTLS), made once: a CA, the aggregator's server certificate,
# one client certificate per sensor (identity sensor-V).
if [ ! -f "$STATE/certs/ca.pem" ]; then
  log "writing demo certificates to $STATE/certs (splitnets-certs)"
  target/release/splitnets-certs --out "$STATE/certs" --views 4 \
    --aggregator-names aggregator,localhost,127.0.0.1 >/dev/null
fi

# Everything the containers need that changes per run. A shared camera trigger a few seconds
# ahead, so the four views of frame k are captured together; a sensor restarted later rejoins
# at the current frame of the same trigger.
{
  echo "ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so"
  echo "SPLITNETS_LOG_FORMAT=json"
  echo "SPLITNETS_SENSOR_START_AT_UNIX_MS=$(( $(date +%s%3N) + 8000 ))"
  if [ "$KEEP" = 0 ]; then echo "SPLITNETS_SENSOR_FRAMES=$FRAMES"; fi
} > "$STATE/demo.env"

"${COMPOSE[@]}" down --remove-orphans >/dev/null 2>&1 || true
log "starting: aggregator, sensor-0..3, viewer (sensors and viewer wait for the aggregator's health check)"
"${COMPOSE[@]}" up -d
"${COMPOSE[@]}" ps

log "dashboard: http://127.0.0.1:${SPLITNETS_COMPOSE_ADMIN_PORT:-9090}/"
if [ "$KEEP" = 1 ]; then
  log "running. Predictions: ${COMPOSE[*]} logs -f viewer"
  log "stop a camera: ${COMPOSE[*]} stop sensor-3   (and start it again with: start sensor-3)"
  log "take it down:  ./scripts/compose-demo.sh --down"
  exit 0
fi

log "predictions (the viewer's output):"
"${COMPOSE[@]}" logs -f --no-color viewer | sed -e 's/^viewer[_0-9]* *| //'
viewer="$("${COMPOSE[@]}" ps -q viewer)"
code="$(docker wait "$viewer")"
log "viewer exited $code; taking the demo down (SIGTERM: the daemons drain and stop)"
"${COMPOSE[@]}" down --remove-orphans
exit "$code"
