#!/usr/bin/env bash
# The controller's footprint (README, "Footprint"): 10 services × 7 signals at a 1 s
# interval against the local Prometheus, for 60 s. Prints RSS, CPU share and tick time.
#
# Needs the local environment: scripts/env.sh up && source /tmp/andon-env/env
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DOCKER_HOST:?source the env file of scripts/env.sh first}"
: "${ANDON_PROMETHEUS_URL:?source the env file of scripts/env.sh first}"
BIN=${ANDON_BIN:-target/x86_64-unknown-linux-gnu/release/andon}
SECS=${FOOTPRINT_SECS:-60}
N=10
WORK=$(mktemp -d)
LISTEN=127.0.0.1:19464
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  for i in $(seq 0 $((N - 1))); do docker service rm "fp-$i" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The shipped policy, for 10 services.
{
  echo "services:"
  for i in $(seq 0 $((N - 1))); do echo "  - {name: fp-$i, min_replicas: 1, max_replicas: 3}"; done
  sed -n '/^signals:/,$p' policies/erlmcp-tps.yaml
} >"$WORK/policy.yaml"
"$BIN" check "$WORK/policy.yaml" >/dev/null

for i in $(seq 0 $((N - 1))); do
  docker service create --detach --quiet --name "fp-$i" --replicas 1 --publish mode=host,target=8080 \
    --label andon.enable=true --label prometheus.io/scrape=true "${ANDON_IMAGE:-andon:dev}" stand-in --listen 0.0.0.0:8080 >/dev/null
done
echo "footprint: 10 services created; waiting for Prometheus to scrape them" >&2
for _ in $(seq 60); do
  n=$(curl -s "$ANDON_PROMETHEUS_URL/api/v1/query" --data-urlencode 'query=count(up{service=~"fp-.*"} == 1)' | grep -o '"value":\[[^]]*\]' | grep -o '"[0-9]*"$' | tr -d '"' || true)
  [ "${n:-0}" = "$N" ] && break
  sleep 1
done

"$BIN" run --policy "$WORK/policy.yaml" --prometheus "$ANDON_PROMETHEUS_URL" --interval 1s --listen "$LISTEN" 2>"$WORK/andon.log" &
pid=$!
sleep 3
hz=$(getconf CLK_TCK)
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
t0=$(date +%s.%N)
sleep "$SECS"
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
t1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
metrics=$(curl -s "http://$LISTEN/metrics")
sum=$(echo "$metrics" | awk '/^andon_reconcile_duration_seconds_sum/ {print $2}')
count=$(echo "$metrics" | awk '/^andon_reconcile_duration_seconds_count/ {print $2}')
le50=$(echo "$metrics" | awk -v c="$count" '/^andon_reconcile_duration_seconds_bucket/ { split($0, a, "le=\""); split(a[2], b, "\""); if ($2 >= c * 0.95 && !done) { print b[1]; done = 1 } }')
awk -v n="$N" -v secs="$SECS" -v u0="$u0" -v s0="$s0" -v u1="$u1" -v s1="$s1" -v hz="$hz" \
    -v t0="$t0" -v t1="$t1" -v rss="$rss" -v hwm="$hwm" -v sum="$sum" -v count="$count" -v p95="$le50" 'BEGIN {
  printf "footprint: %d services x 7 signals, 1 s interval, %d s\n", n, secs
  printf "  RSS %.1f MB (peak %.1f MB)\n", rss / 1024, hwm / 1024
  printf "  CPU %.2f%% of one core\n", (u1 + s1 - u0 - s0) / hz / (t1 - t0) * 100
  printf "  reconcile tick: mean %.1f ms over %d ticks; 95%% of ticks <= %s s (histogram bucket)\n", sum / count * 1000, count, p95
}'
