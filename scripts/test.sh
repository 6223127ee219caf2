#!/usr/bin/env bash
# The test command (README, "Run the tests"; .ci/run calls it). It installs and starts
# what the tests need, runs formatting, lints and every test, and stops what it started,
# even when a test fails.
#
# 1. promtool (Debian's `prometheus`) for the alert-rule tests, Python's `websockets` for
#    the wire tests;
# 2. unit, property and CLI tests, while the image's release build and the install of
#    docker.io and haproxy run in the background on what they leave idle;
# 3. scripts/env.sh up: dockerd on its own socket, swarm init, the scratch image andon:dev,
#    Prometheus; then the live tests against them (tests/live, tests/e2e), then
#    scripts/env.sh down;
# 4. scripts/nodes.sh up: a three-node swarm (a dockerd per network namespace); the
#    multi-node tests (tests/nodes); scripts/nodes.sh down.
set -euo pipefail
cd "$(dirname "$0")/.."

# Our own environment, apart from one a developer may have up for trying things.
export ANDON_ENV_DIR=${ANDON_TEST_ENV_DIR:-/tmp/andon-test-env}
export ANDON_PROM_ADDR=${ANDON_TEST_PROM_ADDR:-127.0.0.1:19091}
export ANDON_HAPROXY_HTTP=${ANDON_TEST_HAPROXY_HTTP:-127.0.0.1:18091}
export ANDON_HAPROXY_TCP=${ANDON_TEST_HAPROXY_TCP:-127.0.0.1:19008}
export ANDON_HAPROXY_METRICS=${ANDON_TEST_HAPROXY_METRICS:-127.0.0.1:18406}

# Each phase says when it starts and how long the run has taken, so that a slow CI run
# shows where its time went.
phase() { echo "test.sh: $(date -u +%T) (+$((SECONDS / 60)) m $((SECONDS % 60)) s): $*" >&2; }

apt_install() {
  local runner=()
  [ "$(id -u)" = 0 ] || runner=(sudo)
  echo "test.sh: installing Debian packages: $*" >&2
  "${runner[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${runner[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v promtool >/dev/null 2>&1 || apt_install prometheus
# A WebSocket client andon did not write, for tests/wire.rs (PyPI's `websockets`).
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
python3 -c 'import websockets' 2>/dev/null || python3 -m pip install -q websockets

mkdir -p "$ANDON_ENV_DIR"

# Docker and HAProxy for the live phases, installed while the lints and unit tests compile
# (half a minute of downloads and unpacking off the critical path); waited for before the
# local Swarm starts. After the install above: one apt at a time. As root only (CI): a
# sudo password prompt does not belong in the background; scripts/env.sh up installs
# what is missing otherwise. Never stopped half-way: an interrupted dpkg needs repairs.
env_installs=""
if [ "$(id -u)" = 0 ] && { ! command -v dockerd || ! command -v haproxy; } >/dev/null 2>&1; then
  scripts/env.sh install >"$ANDON_ENV_DIR/install.log" 2>&1 &
  env_installs=$!
fi

phase "installs done; fetching crates, formatting, lints"
cargo fetch --locked --target x86_64-unknown-linux-gnu
# The image's release build (scripts/env.sh up finds it done), at the lowest priority:
# it takes the cycles the lints and unit tests leave idle (single-threaded crate checks,
# links, tests that wait) and runs at full speed once they are done. One after the
# other, the installs, lints, unit tests and this build took 17.8 minutes of a
# 54.7-minute run (a1bf0b1); `cargo test` alone kept 1.5 of the 2 cores busy.
# In a session of its own, so that a run that fails before it is waited for stops cargo
# and every compiler it started (its process group), not cargo alone.
RUSTFLAGS='-C target-feature=+crt-static' setsid nice -n 19 \
  cargo build --release --locked --target x86_64-unknown-linux-gnu --quiet \
  >"$ANDON_ENV_DIR/release-build.log" 2>&1 &
release_build=$!
stop_release_build() { [ -z "$release_build" ] || kill -- "-$release_build" 2>/dev/null || true; }
trap stop_release_build EXIT
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
phase "unit, property and CLI tests"
cargo test --locked

# The multi-node cluster, apart from one a developer may have up (ID 0): set before the
# trap, so that tearing down never touches theirs.
export ANDON_NODES_DIR=${ANDON_TEST_NODES_DIR:-/tmp/andon-test-nodes}
export ANDON_NODES_ID=${ANDON_TEST_NODES_ID:-1}
export ANDON_NODES_PROM_ADDR=${ANDON_TEST_NODES_PROM_ADDR:-127.0.0.1:19093}
trap 'stop_release_build; scripts/env.sh down; scripts/nodes.sh down' EXIT
phase "the local Swarm: the image's build, the environment"
if [ -n "$env_installs" ] && ! wait "$env_installs"; then
  cat "$ANDON_ENV_DIR/install.log" >&2
  exit 1
fi
if ! wait "$release_build"; then
  cat "$ANDON_ENV_DIR/release-build.log" >&2
  exit 1
fi
release_build=""
phase "the release build is done"
scripts/env.sh up
(
  # shellcheck disable=SC1091
  source "$ANDON_ENV_DIR/env"
  phase "live tests"
  cargo test --locked --test live -- --ignored --test-threads=1
  phase "end-to-end tests"
  cargo test --locked --test e2e -- --ignored --test-threads=1
)
scripts/env.sh down

phase "the three-node swarm"
scripts/nodes.sh up 3
(
  # shellcheck disable=SC1091
  source "$ANDON_NODES_DIR/env"
  phase "multi-node tests"
  cargo test --locked --test nodes -- --ignored --test-threads=1
)
phase "done"
