#!/usr/bin/env bash
# The drill's load generator against wrk, side by side in one run (README, "Generator").
# Same endpoint (a stand-in with --zero-latency), same POST body (MCP ping on an open
# session), HTTP/1.1 keep-alive. Prints:
#   efficiency: requests per CPU-second of each generator process (the server saturates);
#   rate:       the highest open-loop rate the drill holds (achieved ≥ 99% of offered,
#               never behind schedule), and wrk's closed-loop maximum;
#   sessions:   RSS of the drill holding 10,000 concurrent sessions;
#   correctness: a 1 s server stall (SIGSTOP) in a 1,000 msg/s run, as corrected p99.
# Usage: benches/generator.sh   (builds release; installs wrk if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
BIN=target/release/andon
W=$(mktemp -d)
PORT=${PORT:-18181}
"$BIN" stand-in --listen 127.0.0.1:$PORT --zero-latency --queue-limit 100000 2>"$W/standin.log" &
SPID=$!
trap 'kill $SPID 2>/dev/null; kill -CONT $SPID 2>/dev/null; rm -rf "$W"' EXIT
sleep 1
H=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream')
# 20 sessions, as the drill uses: rmcp serves one session's requests one after another.
SIDS=()
for _ in $(seq 20); do
  SID=$(curl -s -D - "${H[@]}" -o /dev/null -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"wrk","version":"1"}}}' http://127.0.0.1:$PORT/mcp | awk 'tolower($1)=="mcp-session-id:" {print $2}' | tr -d '\r')
  curl -s "${H[@]}" -H "mcp-session-id: $SID" -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' http://127.0.0.1:$PORT/mcp >/dev/null
  SIDS+=("\"$SID\"")
done
cat >"$W/ping.lua" <<LUA
local sids = { $(IFS=,; echo "${SIDS[*]}") }
local i = 0
request = function()
  i = i % #sids + 1
  return wrk.format("POST", nil, {
    ["content-type"] = "application/json",
    ["accept"] = "application/json, text/event-stream",
    ["mcp-session-id"] = sids[i],
  }, '{"jsonrpc":"2.0","id":1,"method":"ping"}')
end
LUA
cpu_of() { awk '{print $1 + $2}' "$1"; } # user + sys seconds from /usr/bin/time -f "%U %S"

# wrk: one thread (one core at most), 32 connections, 10 s.
/usr/bin/time -f "%U %S %M" -o "$W/wrk.time" wrk -t1 -c32 -d10s -s "$W/ping.lua" http://127.0.0.1:$PORT/mcp >"$W/wrk.out"
wrk_rps=$(awk '/Requests\/sec/ {print $2}' "$W/wrk.out")
wrk_total=$(awk '/requests in/ {print $1}' "$W/wrk.out")
wrk_cpu=$(cpu_of "$W/wrk.time")

drill_at() { # total rate, sessions, seconds -> writes $W/d.json and $W/d.time
  cat >"$W/s.yaml" <<YAML
name: generator-$1
replicas: 1
client_timeout: 2s
phases:
  - {name: run, duration: ${3}s, connections: $2, rate: {total: $1}, mix: {ping: 1}}
YAML
  /usr/bin/time -f "%U %S %M" -o "$W/d.time" "$BIN" drill "$W/s.yaml" --target http://127.0.0.1:$PORT --json --max-in-flight 100000 >"$W/d.json" 2>/dev/null || true
}
field() { python3 -c "import json,sys; r=json.load(open('$W/d.json')); print($1)"; }

drill_at 10000 20 10
d_ok=$(field "r['counts']['ok']")
d_sched=$(field "r['counts']['scheduled']")
d_cpu=$(cpu_of "$W/d.time")
d_behind=$(field "r['generator_behind_s']")
echo "efficiency: wrk $(awk -v n="$wrk_total" -v c="$wrk_cpu" 'BEGIN {printf "%.0f", n / c}') req/CPU-s ($wrk_total requests, $wrk_cpu CPU-s, $wrk_rps req/s closed-loop); drill $(awk -v n="$d_ok" -v c="$d_cpu" 'BEGIN {printf "%.0f", n / c}') req/CPU-s ($d_ok ok of $d_sched at 10,000/s open-loop, $d_cpu CPU-s over 10 s, behind $d_behind s)"

best=0
for rate in 10000 14000 18000 22000 26000; do
  drill_at $rate 20 8
  ok=$(field "r['counts']['ok']"); sched=$(field "r['counts']['scheduled']"); behind=$(field "r['generator_behind_s']")
  held=$(awk -v o="$ok" -v s="$sched" -v b="$behind" 'BEGIN {print (s > 0 && o >= 0.99 * s && b == 0) ? 1 : 0}')
  echo "  open-loop $rate/s: $ok ok of $sched scheduled, behind $behind s, CPU $(cpu_of "$W/d.time") s -> $([ "$held" = 1 ] && echo held || echo 'not held')"
  [ "$held" = 1 ] && best=$rate || break
done
echo "rate: the drill holds $best msg/s open-loop on one thread; wrk reaches $wrk_rps req/s closed-loop"

cat >"$W/s.yaml" <<YAML
name: generator-sessions
replicas: 1
client_timeout: 5s
phases:
  - {name: open, duration: 20s, connections: {from: 0, to: 10000}, rate: {per_connection: 0.05}, mix: {ping: 1}}
  - {name: hold, duration: 10s, connections: 10000, rate: {per_connection: 0.05}, mix: {ping: 1}}
YAML
/usr/bin/time -f "%U %S %M" -o "$W/d.time" "$BIN" drill "$W/s.yaml" --target http://127.0.0.1:$PORT --json >"$W/d.json" 2>/dev/null || true
echo "sessions: $(field "r['sessions_opened']") sessions opened, max RSS $(awk '{printf "%.0f", $3 / 1024}' "$W/d.time") MB"

# A 1 s stall 4 s into a 10 s run at 1,000 msg/s.
( sleep 4.5; kill -STOP $SPID; sleep 1; kill -CONT $SPID ) &
drill_at 1000 10 10
echo "correctness: with a 1 s stall, corrected p99 $(field "r['phases'][0]['latency']['p99_ms']") ms, p99.9 $(field "r['phases'][0]['latency']['p999_ms']") ms, max $(field "r['phases'][0]['latency']['max_ms']") ms"
