#!/usr/bin/env bash
# Makes a Docker engine available and prints the DOCKER_HOST to use (one line on stdout).
#
#   - An engine that already answers (DOCKER_HOST, or the standard /var/run/docker.sock) is used
#     as it is.
#   - Otherwise Debian's docker.io and docker-compose are installed if missing, and this project
#     starts its own dockerd (vfs storage, no default bridge, no iptables: what works on a
#     machine without an engine or registry), with data, exec root and socket under
#     .local/docker/, logging to .local/docker/dockerd.log.
#
#   eval "export DOCKER_HOST=$(./scripts/docker-engine.sh)"
#   ./scripts/docker-engine.sh stop      # stops the engine this script started (if any)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.local/docker"
SOCK="$STATE/docker.sock"
log() { printf '[docker-engine] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

answers() { DOCKER_HOST="$1" docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if [ "${1:-}" = "stop" ]; then
  if [ -f "$STATE/dockerd.pid" ] && kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null; then
    pid="$(cat "$STATE/dockerd.pid")"
    $SUDO kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "stopped the project's dockerd"
  fi
  exit 0
fi

need_apt=()
command -v docker >/dev/null || need_apt+=(docker.io)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

for host in ${DOCKER_HOST:-} unix:///var/run/docker.sock "unix://$SOCK"; do
  if answers "$host"; then
    log "using the engine at $host"
    echo "$host"
    exit 0
  fi
done

if ! command -v dockerd >/dev/null; then
  log "apt-get install docker.io (for dockerd)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
mkdir -p "$STATE/data" "$STATE/exec"
log "starting dockerd (vfs, no bridge, no iptables); log: $STATE/dockerd.log"
# setsid: the engine outlives this script (and the caller's process group).
$SUDO setsid dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
  --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
  -H "unix://$SOCK" >"$STATE/dockerd.log" 2>&1 < /dev/null &
for _ in $(seq 1 300); do
  if answers "unix://$SOCK"; then
    log "engine up at unix://$SOCK"
    echo "unix://$SOCK"
    exit 0
  fi
  sleep 0.1
done
log "dockerd did not answer within 30 s; last lines of its log:"
tail -n 5 "$STATE/dockerd.log" >&2
exit 1
