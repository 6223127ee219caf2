#!/usr/bin/env bash
# The project's own local Swarm + Prometheus, for the integration tests and for trying
# andon by hand (README, "Run it on a local Swarm").
#
#   scripts/env.sh up     install what is missing, start dockerd + swarm, build the
#                         scratch image andon:dev, start Prometheus; writes $DIR/env
#   scripts/env.sh down   stop and remove all of it (by pid), even after a failed test
#   scripts/env.sh status
#   scripts/env.sh install  only install what is missing (docker.io, prometheus, haproxy)
#
# DIR is $ANDON_ENV_DIR or /tmp/andon-env. Nothing here touches a system dockerd: the
# daemon has its own socket, data root, exec root and pidfile under DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${ANDON_ENV_DIR:-/tmp/andon-env}
SOCK=$DIR/docker.sock
PROM_ADDR=${ANDON_PROM_ADDR:-127.0.0.1:19090}
# HAProxy in front of the stand-ins (manifests/haproxy.cfg): MCP over HTTP/WebSocket, TCP.
HAPROXY_HTTP=${ANDON_HAPROXY_HTTP:-127.0.0.1:18090}
HAPROXY_TCP=${ANDON_HAPROXY_TCP:-127.0.0.1:19009}
# Its Prometheus exporter (the edge's sheds are in the policies' signals).
HAPROXY_METRICS=${ANDON_HAPROXY_METRICS:-127.0.0.1:18405}
IMAGE=${ANDON_IMAGE:-andon:dev}
TARGET=x86_64-unknown-linux-gnu

log() { echo "env.sh: $*" >&2; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_missing() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
  if [ ${#missing[@]} -gt 0 ]; then
    local runner=()
    [ "$(id -u)" = 0 ] || runner=(sudo)
    log "installing Debian packages: ${missing[*]} (about a minute)"
    "${runner[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${runner[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

wait_for() { # seconds, description, command...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "timed out after ${secs}s waiting for $what"
  return 1
}

start_dockerd() {
  if alive "$DIR/dockerd.pid"; then log "dockerd already running (pid $(cat "$DIR/dockerd.pid"))"; return; fi
  # A data root left by an earlier run keeps its swarm state: always start fresh.
  rm -rf "$DIR/data" "$DIR/x"
  mkdir -p "$DIR/data" "$DIR/x"
  dockerd --data-root "$DIR/data" --exec-root "$DIR/x" -H "unix://$SOCK" \
    --pidfile "$DIR/dockerd.pid" >"$DIR/dockerd.log" 2>&1 &
  wait_for 60 "dockerd on $SOCK" docker -H "unix://$SOCK" version || { tail -20 "$DIR/dockerd.log" >&2; exit 1; }
  docker -H "unix://$SOCK" swarm init --advertise-addr 127.0.0.1 >/dev/null
  log "dockerd up, swarm initialised ($SOCK)"
}

build_image() {
  log "building the static binary (release, crt-static)"
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target $TARGET --quiet
  rm -rf "$DIR/image"
  mkdir -p "$DIR/image"
  cp "target/$TARGET/release/andon" "$DIR/image/andon"
  cp manifests/Dockerfile "$DIR/image/Dockerfile"
  DOCKER_BUILDKIT=0 docker -H "unix://$SOCK" build -q -t "$IMAGE" "$DIR/image" >/dev/null 2>"$DIR/build.log" \
    || { cat "$DIR/build.log" >&2; exit 1; }
  log "image $IMAGE built"
}

start_prometheus() {
  if alive "$DIR/prometheus.pid"; then log "Prometheus already running"; return; fi
  mkdir -p "$DIR/prom"
  sed -e "s#unix:///var/run/docker.sock#unix://$SOCK#" -e "s#scrape_interval: 15s#scrape_interval: 2s#" \
    -e "s#127.0.0.1:8405#$HAPROXY_METRICS#" manifests/prometheus.yml >"$DIR/prometheus.yml"
  cp manifests/alerts.yml "$DIR/alerts.yml"
  prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prom" \
    --web.listen-address="$PROM_ADDR" --web.enable-lifecycle >"$DIR/prometheus.log" 2>&1 &
  echo $! >"$DIR/prometheus.pid"
  wait_for 30 "Prometheus on $PROM_ADDR" curl -sf "http://$PROM_ADDR/-/ready" || { tail -20 "$DIR/prometheus.log" >&2; exit 1; }
  log "Prometheus up on http://$PROM_ADDR"
}

up() {
  install_missing
  mkdir -p "$DIR"
  start_dockerd
  build_image
  start_prometheus
  start_haproxy
  cat >"$DIR/env" <<ENV
export DOCKER_HOST=unix://$SOCK
export ANDON_PROMETHEUS_URL=http://$PROM_ADDR
export ANDON_IMAGE=$IMAGE
export ANDON_ENV_DIR=$DIR
export ANDON_BIN=$ROOT/target/$TARGET/release/andon
export ANDON_HAPROXY_SOCKET=$DIR/haproxy.sock
export ANDON_HAPROXY_CFG=$DIR/haproxy.cfg
export ANDON_HAPROXY_MAP=$DIR/admit.map
export ANDON_HAPROXY_HTTP=$HAPROXY_HTTP
export ANDON_HAPROXY_TCP=$HAPROXY_TCP
export ANDON_HAPROXY_METRICS=$HAPROXY_METRICS
ENV
  log "ready: source $DIR/env"
}

# HAProxy with manifests/haproxy.cfg, its paths and ports made local. andon drives it
# over the runtime API (tests start `andon run --haproxy-socket $DIR/haproxy.sock`).
start_haproxy() {
  if alive "$DIR/haproxy.pid"; then log "HAProxy already running"; return; fi
  cp manifests/admit.map "$DIR/admit.map"
  sed -e "s#/var/run/haproxy/admin.sock#$DIR/haproxy.sock#" \
      -e "s#/usr/local/etc/haproxy/admit.map#$DIR/admit.map#" \
      -e "s#bind :8080#bind $HAPROXY_HTTP#" -e "s#bind :9000#bind $HAPROXY_TCP#" \
      -e "s#bind :8405#bind $HAPROXY_METRICS#" \
      -e "s#^global#global\n    pidfile $DIR/haproxy.pid#" \
      manifests/haproxy.cfg >"$DIR/haproxy.cfg"
  haproxy -c -q -f "$DIR/haproxy.cfg" || { log "manifests/haproxy.cfg is not valid"; exit 1; }
  haproxy -D -f "$DIR/haproxy.cfg" 2>"$DIR/haproxy.log" || { cat "$DIR/haproxy.log" >&2; exit 1; }
  wait_for 10 "HAProxy's runtime API" test -S "$DIR/haproxy.sock" || { cat "$DIR/haproxy.log" >&2; exit 1; }
  log "HAProxy up on $HAPROXY_HTTP (http, ws) and $HAPROXY_TCP (tcp), runtime API $DIR/haproxy.sock"
}

stop_pid() { # pidfile, name
  if alive "$1"; then
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $2 (pid $pid)"
  fi
  rm -f "$1"
}

down() {
  # Best effort, every step: tearing down must not fail the run that called it.
  set +e
  stop_pid "$DIR/prometheus.pid" Prometheus
  stop_pid "$DIR/haproxy.pid" HAProxy
  if alive "$DIR/dockerd.pid"; then
    docker -H "unix://$SOCK" swarm leave --force >/dev/null 2>&1 || true
  fi
  stop_pid "$DIR/dockerd.pid" dockerd
  # Network namespaces and overlay mounts under the exec root go with the daemon; make
  # sure nothing is left mounted before removing the directory.
  grep -o " $DIR/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$DIR" 2>/dev/null
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  # What `up` needs from Debian, alone: scripts/test.sh installs it while it compiles.
  install) install_missing ;;
  status)
    alive "$DIR/dockerd.pid" && echo "dockerd: running" || echo "dockerd: stopped"
    alive "$DIR/prometheus.pid" && echo "prometheus: running ($PROM_ADDR)" || echo "prometheus: stopped"
    alive "$DIR/haproxy.pid" && echo "haproxy: running ($HAPROXY_HTTP, $HAPROXY_TCP)" || echo "haproxy: stopped"
    ;;
  *) echo "usage: scripts/env.sh up|down|status|install" >&2; exit 2 ;;
esac
