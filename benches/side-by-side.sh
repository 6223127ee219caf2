#!/usr/bin/env bash
# Two drill binaries and wrk side by side, three rounds alternating (README, "Generator":
# the load lane against hyper's client). Requests answered per CPU-second of each generator
# against one zero-latency stand-in (NEW's): on 32 connections and unbounded at 10,000/s,
# and on 32 connections at wrk's own closed-loop rate. Prints label, ok, CPU-s, ok per
# CPU-s, p99 ms, max RSS MB per drill.
# Usage: benches/side-by-side.sh OLD_BINARY NEW_BINARY [ROUNDS]   (3 rounds by default)
set -u
# shellcheck source=benches/wrk-ping.sh
. "$(dirname "$0")/wrk-ping.sh"
OLD=$(realpath "${1:?usage: $0 OLD_BINARY NEW_BINARY [ROUNDS]}"); NEW=$(realpath "${2:?usage: $0 OLD_BINARY NEW_BINARY [ROUNDS]}")
PORT=${PORT:-18181}
W=$(mktemp -d); cd "$W"
"$NEW" stand-in --listen 127.0.0.1:$PORT --zero-latency --queue-limit 100000 2>/dev/null &
SPID=$!; trap 'kill $SPID; rm -rf "$W"' EXIT; sleep 1
wrk_ping_script "$PORT" ping.lua
d() { # bin rate label extra...
  cat > s.yaml <<YAML
name: gen
replicas: 1
client_timeout: 2s
phases:
  - {name: run, duration: 10s, connections: 20, rate: {total: $2}, mix: {ping: 1}}
YAML
  /usr/bin/time -f "%U %S %M" -o d.time "$1" drill s.yaml --target http://127.0.0.1:$PORT --json "${@:4}" > d.json 2>/dev/null
  python3 -c "
import json; r=json.load(open('d.json')); u,s,m=open('d.time').read().split(); c=float(u)+float(s); ok=r['counts']['ok']
print('$3', ok, round(c,2), round(ok/c), r['overall']['p99_ms'], round(int(m)/1024))"
}
for _ in $(seq "${3:-3}"); do
  /usr/bin/time -f "%U %S %M" -o wrk.time wrk -t1 -c32 -d10s -s ping.lua http://127.0.0.1:$PORT/mcp > wrk.out
  n=$(awk '/requests in/ {print $1}' wrk.out); c=$(awk '{print $1+$2}' wrk.time); rps=$(awk '/Requests\/sec/ {printf "%d", int($2 / 100) * 100}' wrk.out)
  echo "wrk $n $c $(awk -v n=$n -v c=$c 'BEGIN{printf "%.0f", n/c}') rps=$rps"
  d "$OLD" 10000 old-32 --http-connections 32
  d "$NEW" 10000 new-32 --http-connections 32
  d "$OLD" 10000 old-default
  d "$NEW" 10000 new-default
  d "$OLD" $rps old-32-at-wrk-rate --http-connections 32
  d "$NEW" $rps new-32-at-wrk-rate --http-connections 32
done
