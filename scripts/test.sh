#!/usr/bin/env bash
# The test command (README, "Run the tests"; .ci/run calls it). It installs what the
# tests need when it is missing, then runs formatting, lints and every test.
#
# Needs: Debian's `prometheus` package, for promtool (the alert rules are checked and
# unit-tested with it).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local runner=()
  [ "$(id -u)" = 0 ] || runner=(sudo)
  echo "test.sh: installing Debian packages: $*" >&2
  "${runner[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${runner[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
