#!/usr/bin/env bash
# A multi-node local Swarm on this one machine, for the multi-node tests and for trying
# andon where replicas can fail to fit (README, "Many nodes").
#
#   scripts/nodes.sh up [N] [MANAGERS]   N nodes (default 3), the first MANAGERS of them
#                                        managers (default 1); the image andon:dev on
#                                        each; Prometheus discovering every node's tasks;
#                                        writes $DIR/env
#   scripts/nodes.sh down                stop and remove all of it, failures included
#   scripts/nodes.sh status
#   scripts/nodes.sh cut-node I | mend-node I    node I off the network, and back
#   scripts/nodes.sh kill-node I | start-node I  node I's power cut (SIGKILL to all of
#                                                it), and booted again
#   scripts/nodes.sh stop-node I                 node I's dockerd stopped (graceful)
#
# Each node is a dockerd in its own network namespace (andon0-n1, andon0-n2, ...), joined
# to a host bridge at 10.77.0.1/24; node i is 10.77.0.(10+i). ANDON_NODES_ID (0-9,
# default 0) sets the last names' digit and the third octet, so that the test command's
# cluster (ID 1) and one for trying things by hand can run side by side. `ip netns exec` cannot
# start dockerd (it remounts /sys: "Devices cgroup isn't mounted"), `nsenter --net` can.
# DIR is $ANDON_NODES_DIR or /tmp/andon-nodes. Nothing here touches a system dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${ANDON_NODES_DIR:-/tmp/andon-nodes}
PROM_ADDR=${ANDON_NODES_PROM_ADDR:-127.0.0.1:19092}
IMAGE=${ANDON_IMAGE:-andon:dev}
TARGET=x86_64-unknown-linux-gnu
ID=${ANDON_NODES_ID:-0}
case "$ID" in [0-9]) ;; *) echo "nodes.sh: ANDON_NODES_ID must be a digit (got '$ID')" >&2; exit 2 ;; esac
BRIDGE=andonbr$ID
NET=10.77.$ID
NS_PREFIX=andon$ID-n
VETH=a${ID}v

log() { echo "nodes.sh: $*" >&2; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() { # seconds, description, command...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "timed out after ${secs}s waiting for $what"
  return 1
}
addr_of() { echo "$NET.$((10 + $1))"; }
sock_of() { echo "$DIR/n$1/docker.sock"; }
dk() { local n=$1; shift; docker -H "unix://$(sock_of "$n")" "$@"; }

install_missing() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

network_up() { # nodes
  ip link show "$BRIDGE" >/dev/null 2>&1 || {
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  }
  for i in $(seq "$1"); do
    local ns=$NS_PREFIX$i
    ip netns list | grep -qw "$ns" && continue
    ip netns add "$ns"
    ip link add "$VETH${i}h" type veth peer name "$VETH${i}n"
    ip link set "$VETH${i}h" master "$BRIDGE" up
    ip link set "$VETH${i}n" netns "$ns"
    ip -n "$ns" addr add "$(addr_of "$i")/24" dev "$VETH${i}n"
    ip -n "$ns" link set "$VETH${i}n" up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$NET.1"
  done
  # Docker's FORWARD policy is DROP and bridged traffic goes through iptables
  # (br_netfilter), so node-to-node traffic over the bridge needs its own rule.
  iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null \
    || iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
}

# Each daemon also listens on tcp://127.0.0.1:2375 inside its own namespace: all nodes
# share one mount namespace, so a socket path cannot mean "this node's daemon", but on a
# node's host network 127.0.0.1:2375 does (andon as a service on whichever manager).
# Unauthenticated: any container on a node's host network is root on that node. Fine
# for a throwaway test cluster; never do this on a real one (use the socket mount).
# DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1: a task's image is taken from the node when it is
# there. Without it each task first tries a registry (unreachable from the namespaces)
# and waits out a DNS timeout, so a task takes tens of seconds to start.
start_node() { # i
  local i=$1 d=$DIR/n$1
  alive "$d/dockerd.pid" && return
  rm -rf "$d"
  mkdir -p "$d/data" "$d/x"
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nsenter --net="/run/netns/$NS_PREFIX$i" dockerd --data-root "$d/data" --exec-root "$d/x" \
    -H "unix://$d/docker.sock" -H tcp://127.0.0.1:2375 --pidfile "$d/dockerd.pid" >"$d/dockerd.log" 2>&1 &
}

# Restarts a node's daemon after a test stopped it (a `node_down` fault): same data root,
# so it rejoins the swarm as the same node.
restart_node() { # i
  local i=$1 d=$DIR/n$1
  alive "$d/dockerd.pid" && return
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nsenter --net="/run/netns/$NS_PREFIX$i" dockerd --data-root "$d/data" --exec-root "$d/x" \
    -H "unix://$d/docker.sock" -H tcp://127.0.0.1:2375 --pidfile "$d/dockerd.pid" >>"$d/dockerd.log" 2>&1 &
  wait_for 60 "node $i's dockerd" dk "$i" version || { tail -20 "$d/dockerd.log" >&2; exit 1; }
}

build_image() { # nodes
  if [ ! -x "target/$TARGET/release/andon" ] || [ -n "${ANDON_REBUILD:-}" ]; then
    log "building the static binary (release, crt-static)"
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target $TARGET --quiet
  fi
  rm -rf "$DIR/image"
  mkdir -p "$DIR/image"
  cp "target/$TARGET/release/andon" "$DIR/image/andon"
  cp manifests/Dockerfile "$DIR/image/Dockerfile"
  # No registry: every node builds the image itself (FROM scratch, a copy: seconds).
  for i in $(seq "$1"); do
    DOCKER_BUILDKIT=0 dk "$i" build -q -t "$IMAGE" "$DIR/image" >/dev/null 2>"$DIR/build.log" \
      || { cat "$DIR/build.log" >&2; exit 1; }
  done
  log "image $IMAGE on $1 nodes"
}

form_swarm() { # nodes managers
  local n=$1 m=$2 a1; a1=$(addr_of 1)
  dk 1 swarm init --advertise-addr "$a1" --listen-addr "$a1:2377" >/dev/null
  local wtoken mtoken
  wtoken=$(dk 1 swarm join-token -q worker)
  mtoken=$(dk 1 swarm join-token -q manager)
  for i in $(seq 2 "$n"); do
    local token=$wtoken
    [ "$i" -le "$m" ] && token=$mtoken
    dk "$i" swarm join --token "$token" --advertise-addr "$(addr_of "$i")" \
      --listen-addr "$(addr_of "$i"):2377" "$a1:2377" >/dev/null
  done
  wait_for 60 "$n nodes ready" bash -c "[ \$(docker -H unix://$(sock_of 1) node ls --format '{{.Status}}' | grep -c Ready) -eq $n ]"
  # Label each node with its index, so tests and placement constraints can name them.
  for i in $(seq "$n"); do
    local id; id=$(dk "$i" info --format '{{.Swarm.NodeID}}')
    dk 1 node update --label-add "andon.node=n$i" "$id" >/dev/null
  done
  log "swarm of $n nodes ($m managers) formed"
}

start_prometheus() {
  alive "$DIR/prometheus.pid" && return
  mkdir -p "$DIR/prom"
  # No HAProxy here: the edge's job (the file's last) is left out.
  sed -e "s#unix:///var/run/docker.sock#unix://$(sock_of 1)#" -e "s#scrape_interval: 15s#scrape_interval: 2s#" \
    -e '/^  # The edge (manifests\/haproxy.cfg/,$d' manifests/prometheus.yml >"$DIR/prometheus.yml"
  cp manifests/alerts.yml "$DIR/alerts.yml"
  prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prom" \
    --web.listen-address="$PROM_ADDR" >"$DIR/prometheus.log" 2>&1 &
  echo $! >"$DIR/prometheus.pid"
  wait_for 30 "Prometheus on $PROM_ADDR" curl -sf "http://$PROM_ADDR/-/ready" || { tail -20 "$DIR/prometheus.log" >&2; exit 1; }
}

up() {
  local n=${1:-3} m=${2:-1}
  case "$n$m" in *[!0-9]*) log "N and MANAGERS must be numbers (got '$n' '$m')"; exit 2 ;; esac
  if [ "$n" -lt 1 ] || [ "$n" -gt 9 ] || [ "$m" -lt 1 ] || [ "$m" -gt "$n" ]; then
    log "need 1 <= MANAGERS <= N <= 9 (got N=$n MANAGERS=$m)"; exit 2
  fi
  [ "$(id -u)" = 0 ] || { log "needs root (network namespaces, a bridge, iptables)"; exit 2; }
  if [ -f "$DIR/env" ] && alive "$DIR/n1/dockerd.pid"; then
    log "already up ($DIR); scripts/nodes.sh down first for another shape"; return
  fi
  install_missing
  mkdir -p "$DIR"
  echo "$n" >"$DIR/count"
  network_up "$n"
  for i in $(seq "$n"); do start_node "$i"; done
  for i in $(seq "$n"); do
    wait_for 60 "node $i's dockerd" dk "$i" version || { tail -20 "$DIR/n$i/dockerd.log" >&2; exit 1; }
  done
  form_swarm "$n" "$m"
  build_image "$n"
  start_prometheus
  {
    echo "export DOCKER_HOST=unix://$(sock_of 1)"
    echo "export ANDON_PROMETHEUS_URL=http://$PROM_ADDR"
    echo "export ANDON_IMAGE=$IMAGE"
    echo "export ANDON_NODES_DIR=$DIR"
    echo "export ANDON_NODES=$n"
    echo "export ANDON_NODES_ID=$ID"
    echo "export ANDON_BIN=$ROOT/target/$TARGET/release/andon"
  } >"$DIR/env"
  log "ready: source $DIR/env (node i: $NET.1i, socket $DIR/ni/docker.sock)"
}

stop_pid() { # pidfile, name
  if alive "$1"; then
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $2 (pid $pid)"
  fi
  rm -f "$1"
}

# A node's power cut: SIGKILL to its dockerd, containerd, shims and every container's
# processes (their pids read first; they are not children of anything named after the
# node). The namespace stays, with nothing in it: the managers see a dead node, clients
# get refused. `start-node` boots it again (same data root: the same swarm node).
kill_node() { # i
  local i=$1 pids=() ids p
  alive "$DIR/n$i/dockerd.pid" || { log "node $i is not running"; return 1; }
  # Best effort from here (set -e would stop half-way): a container may go between the
  # listing and the inspection, a process between the listing and the kill.
  ids=$(dk "$i" ps -q 2>/dev/null) || ids=""
  for c in $ids; do
    p=$(dk "$i" inspect -f '{{.State.Pid}}' "$c" 2>/dev/null) || continue
    [ -n "$p" ] && [ "$p" != 0 ] && pids+=("$p")
  done
  pkill -9 -f "$DIR/n$i/" 2>/dev/null || true
  for p in ${pids[@]+"${pids[@]}"}; do kill -9 "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do alive "$DIR/n$i/dockerd.pid" || break; sleep 0.1; done
  rm -f "$DIR/n$i/dockerd.pid"
  log "node $i killed (daemon, containerd, ${#pids[@]} containers)"
}

down() {
  # Best effort, every step: tearing down must not fail the run that called it.
  set +e
  stop_pid "$DIR/prometheus.pid" Prometheus
  local n=9
  for i in $(seq "$n"); do
    [ -d "$DIR/n$i" ] || continue
    alive "$DIR/n$i/dockerd.pid" && dk "$i" swarm leave --force >/dev/null 2>&1
  done
  for i in $(seq "$n"); do [ -d "$DIR/n$i" ] && stop_pid "$DIR/n$i/dockerd.pid" "node $i's dockerd"; done
  # A daemon killed (not stopped) leaves its containerd, shims and containers behind.
  pkill -9 -f "$DIR/n[0-9]/" 2>/dev/null
  grep -o " $DIR/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null; done
  for i in $(seq "$n"); do
    ip netns del "$NS_PREFIX$i" 2>/dev/null
    ip link del "$VETH${i}h" 2>/dev/null
  done
  ip link del "$BRIDGE" 2>/dev/null
  while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do :; done
  rm -rf "$DIR" 2>/dev/null
  return 0
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  # A node's daemon, stopped and started again by a test (`node_down`).
  stop-node) stop_pid "$DIR/n${2:?node index}/dockerd.pid" "node $2's dockerd" ;;
  kill-node) kill_node "${2:?node index}" ;;
  start-node) restart_node "${2:?node index}" ;;
  # A node cut off the network (a partition, a dead host as the managers see it), and
  # joined again: its tasks keep running but nobody reaches them.
  cut-node) ip link set "$VETH${2:?node index}h" down; log "node $2 cut off" ;;
  mend-node) ip link set "$VETH${2:?node index}h" up; log "node $2 back on the network" ;;
  status)
    for i in $(seq "$(cat "$DIR/count" 2>/dev/null || echo 0)"); do
      alive "$DIR/n$i/dockerd.pid" && echo "n$i ($(addr_of "$i")): running" || echo "n$i: stopped"
    done
    alive "$DIR/prometheus.pid" && echo "prometheus: running ($PROM_ADDR)" || echo "prometheus: stopped"
    ;;
  *) echo "usage: scripts/nodes.sh up [N] [MANAGERS] | down | status | stop-node I | kill-node I | start-node I | cut-node I | mend-node I" >&2; exit 2 ;;
esac
