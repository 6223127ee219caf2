#!/usr/bin/env bash
# The drill's load generator against wrk, side by side in one run (README, "Generator").
# Same endpoint (a stand-in with --zero-latency), same POST body (MCP ping on an open
# session), HTTP/1.1 keep-alive. Prints:
#   efficiency: requests per CPU-second of each generator process (the server saturates);
#               the drill with wrk's 32 connections (--http-connections 32) and with
#               its default, a connection per request in flight, at 10,000/s; and on 32
#               connections at wrk's own closed-loop rate;
#   ws:         messages per CPU-second over WebSocket (erlmcp's wire), the drill against
#               tsung 1.7 (ts_websocket, text frames ending in \n), on one stand-in;
#   rate:       the highest open-loop rate the drill holds (achieved ≥ 99% of offered,
#               never behind schedule) on 32 connections, and wrk's closed-loop maximum;
#   overload:   26,000/s, past the stand-in's capacity: the default bound on requests in
#               flight, none, and 32 connections;
#   sessions:   RSS of the drill holding 10,000 concurrent sessions;
#   correctness: a 1 s server stall (SIGSTOP) in a 1,000 msg/s run, as corrected p99.
# Usage: benches/generator.sh   (builds release; installs wrk and tsung if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/wrk-ping.sh
. benches/wrk-ping.sh
for tool in wrk tsung; do
  command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $tool >/dev/null; }
done
cargo build --release --quiet
BIN=target/release/andon
W=$(mktemp -d)
PORT=${PORT:-18181}
"$BIN" stand-in --listen 127.0.0.1:$PORT --zero-latency --queue-limit 100000 2>"$W/standin.log" &
SPID=$!
trap 'kill $SPID 2>/dev/null; kill -CONT $SPID 2>/dev/null; rm -rf "$W"' EXIT
sleep 1
wrk_ping_script "$PORT" "$W/ping.lua"
cpu_of() { awk '{print $1 + $2}' "$1"; } # user + sys seconds from /usr/bin/time -f "%U %S"

# wrk: one thread (one core at most), 32 connections, 10 s.
/usr/bin/time -f "%U %S %M" -o "$W/wrk.time" wrk -t1 -c32 -d10s -s "$W/ping.lua" http://127.0.0.1:$PORT/mcp >"$W/wrk.out"
wrk_rps=$(awk '/Requests\/sec/ {print $2}' "$W/wrk.out")
wrk_total=$(awk '/requests in/ {print $1}' "$W/wrk.out")
wrk_cpu=$(cpu_of "$W/wrk.time")

drill_at() { # total rate, sessions, seconds, extra drill args... -> $W/d.json and $W/d.time
  cat >"$W/s.yaml" <<YAML
name: generator-$1
replicas: 1
client_timeout: 2s
phases:
  - {name: run, duration: ${3}s, connections: $2, rate: {total: $1}, mix: {ping: 1}}
YAML
  /usr/bin/time -f "%U %S %M" -o "$W/d.time" "$BIN" drill "$W/s.yaml" --target http://127.0.0.1:$PORT --json "${@:4}" >"$W/d.json" 2>/dev/null || true
}
field() { python3 -c "import json,sys; r=json.load(open('$W/d.json')); print($1)"; }

# The drill twice: with wrk's 32 connections (--http-connections 32), and with a
# connection per request in flight (the default).
wrk_eff=$(awk -v n="$wrk_total" -v c="$wrk_cpu" 'BEGIN {printf "%.0f", n / c}')
echo "efficiency: wrk $wrk_eff req/CPU-s ($wrk_total requests, $wrk_cpu CPU-s, $wrk_rps req/s closed-loop)"
for bound in 32 none; do
  args=(); [ $bound != none ] && args=(--http-connections $bound)
  drill_at 10000 20 10 "${args[@]}"
  d_ok=$(field "r['counts']['ok']")
  d_cpu=$(cpu_of "$W/d.time")
  d_eff=$(awk -v n="$d_ok" -v c="$d_cpu" 'BEGIN {printf "%.0f", n / c}')
  echo "  drill, connections $bound: $d_eff req/CPU-s ($d_ok ok of $(field "r['counts']['scheduled']") at 10,000/s open-loop, $d_cpu CPU-s over 10 s, behind $(field "r['generator_behind_s']") s, p99 $(field "r['overall']['p99_ms']") ms, RSS $(awk '{printf "%.0f", $3 / 1024}' "$W/d.time") MB) -> $(awk -v a="$d_eff" -v b="$wrk_eff" 'BEGIN {printf "%.2f", a / b}')x wrk"
done
# Open-loop costs a timer wake per millisecond or so, closed-loop none: the drill again at
# wrk's own closed-loop rate, on its 32 connections.
wrk_rate=$(awk -v r="$wrk_rps" 'BEGIN {printf "%d", int(r / 100) * 100}')
drill_at "$wrk_rate" 20 10 --http-connections 32
d_ok=$(field "r['counts']['ok']"); d_cpu=$(cpu_of "$W/d.time")
d_eff=$(awk -v n="$d_ok" -v c="$d_cpu" 'BEGIN {printf "%.0f", n / c}')
echo "  drill, connections 32, at wrk's rate: $d_eff req/CPU-s ($d_ok ok at $wrk_rate/s open-loop, $d_cpu CPU-s, p99 $(field "r['overall']['p99_ms']") ms) -> $(awk -v a="$d_eff" -v b="$wrk_eff" 'BEGIN {printf "%.2f", a / b}')x wrk"

tsung_run() { # pings per user -> $W/ts.time
  cat >"$W/ts.xml" <<XML
<?xml version="1.0"?>
<!DOCTYPE tsung SYSTEM "/usr/share/tsung/tsung-1.0.dtd">
<tsung loglevel="warning" version="1.0">
  <clients><client host="localhost" use_controller_vm="true" maxusers="1000"/></clients>
  <servers><server host="127.0.0.1" port="$PORT" type="tcp"/></servers>
  <load><arrivalphase phase="1" duration="1" unit="second"><users maxnumber="20" arrivalrate="100" unit="second"/></arrivalphase></load>
  <sessions><session name="mcp" probability="100" type="ts_websocket">
    <request><websocket type="connect" path="/mcp/ws"/></request>
    <request><websocket type="message" frame="text">{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"tsung","version":"1.7"}}}&#10;</websocket></request>
    <request><websocket type="message" frame="text" ack="no_ack">{"jsonrpc":"2.0","method":"notifications/initialized"}&#10;</websocket></request>
    <for from="1" to="$1" incr="1" var="i">
      <request><websocket type="message" frame="text">{"jsonrpc":"2.0","id":1,"method":"ping"}&#10;</websocket></request>
    </for>
  </session></sessions>
</tsung>
XML
  rm -rf "$W/tslog"
  /usr/bin/time -f "%U %S %M" -o "$W/ts.time" timeout 300 tsung -f "$W/ts.xml" -l "$W/tslog" start >/dev/null 2>&1 || true
}
pings() { curl -s http://127.0.0.1:$PORT/metrics | awk '$1 == "erlmcp_requests_total{method=\"ping\"}" {print $2}'; }
tsung_run 1
ts_idle_cpu=$(cpu_of "$W/ts.time")
p0=$(pings)
tsung_run 3000
p1=$(pings)
ts_msgs=$(awk -v a="$p0" -v b="$p1" 'BEGIN {print b - a}')
ts_cpu=$(awk -v c="$(cpu_of "$W/ts.time")" -v i="$ts_idle_cpu" 'BEGIN {print c - i}')
cat >"$W/s.yaml" <<YAML
name: generator-ws
replicas: 1
client_timeout: 2s
phases:
  - {name: run, duration: 10s, connections: 20, rate: {total: 8000}, mix: {ping: 1}}
YAML
p0=$(pings)
/usr/bin/time -f "%U %S %M" -o "$W/d.time" "$BIN" drill "$W/s.yaml" --target ws://127.0.0.1:$PORT/mcp/ws --json --max-in-flight 100000 >"$W/d.json" 2>/dev/null || true
p1=$(pings)
dw_msgs=$(awk -v a="$p0" -v b="$p1" 'BEGIN {print b - a}')
dw_cpu=$(cpu_of "$W/d.time")
ts_eff=$(awk -v n="$ts_msgs" -v c="$ts_cpu" 'BEGIN {printf "%.0f", n / c}')
dw_eff=$(awk -v n="$dw_msgs" -v c="$dw_cpu" 'BEGIN {printf "%.0f", n / c}')
echo "ws: tsung $ts_eff msg/CPU-s ($ts_msgs pings, $ts_cpu CPU-s net of ${ts_idle_cpu} s for the VM), closed loop, 20 connections; drill $dw_eff msg/CPU-s ($dw_msgs pings at 8,000/s open-loop, $dw_cpu CPU-s, behind $(field "r['generator_behind_s']") s, p99 $(field "r['overall']['p99_ms']") ms); drill/tsung $(awk -v a="$dw_eff" -v b="$ts_eff" 'BEGIN {printf "%.2f", a / b}')"

best=0
for rate in 10000 14000 18000 22000 26000; do
  drill_at $rate 20 8 --http-connections 32
  ok=$(field "r['counts']['ok']"); sched=$(field "r['counts']['scheduled']"); behind=$(field "r['generator_behind_s']")
  held=$(awk -v o="$ok" -v s="$sched" -v b="$behind" 'BEGIN {print (s > 0 && o >= 0.99 * s && b == 0) ? 1 : 0}')
  echo "  open-loop $rate/s: $ok ok of $sched scheduled, behind $behind s, CPU $(cpu_of "$W/d.time") s -> $([ "$held" = 1 ] && echo held || echo 'not held')"
  [ "$held" = 1 ] && best=$rate || break
done
echo "rate: the drill holds $best msg/s open-loop on one thread (32 connections); wrk reaches $wrk_rps req/s closed-loop"

# Past the stand-in's capacity: 26,000/s open-loop for 8 s, with the drill's default bound
# on requests in flight (4,096; past it a request is not sent, counted as `generator`,
# and the second is behind schedule), then unbounded. CPU of each side over the run.
overload() { # extra drill args -> one line
  cat >"$W/s.yaml" <<YAML
name: generator-overload
replicas: 1
client_timeout: 2s
phases:
  - {name: run, duration: 8s, connections: 20, rate: {total: 26000}, mix: {ping: 1}}
YAML
  local s0 s1
  s0=$(awk '{print $14 + $15}' /proc/$SPID/stat)
  /usr/bin/time -f "%U %S %M" -o "$W/d.time" "$BIN" drill "$W/s.yaml" --target http://127.0.0.1:$PORT --json "$@" >"$W/d.json" 2>/dev/null || true
  s1=$(awk '{print $14 + $15}' /proc/$SPID/stat)
  local label="default bound (4,096 in flight)"
  [ $# -gt 0 ] && label="$*"
  echo "  26,000/s $label: $(field "r['counts']['ok']") ok of $(field "r['counts']['scheduled']") scheduled ($(field "round(r['counts']['ok'] / 8)")/s), not sent (generator) $(field "r['counts']['errors'].get('generator', 0)"), timeouts $(field "r['counts']['errors'].get('timeout', 0)"), behind $(field "r['generator_behind_s']") s, p99 $(field "r['overall']['p99_ms']") ms; drill CPU $(awk '{print $1 + $2}' "$W/d.time") s (RSS $(awk '{printf "%.0f", $3 / 1024}' "$W/d.time") MB), stand-in CPU $(awk -v a="$s0" -v b="$s1" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", (b - a) / hz}') s"
}
echo "overload:"
overload
overload --max-in-flight 100000
overload --http-connections 32

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
