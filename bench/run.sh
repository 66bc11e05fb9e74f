#!/usr/bin/env bash
# The benchmark command. Full run (about 8 minutes on 2 cores, writes BENCHMARKS.md):
#   bench/run.sh
# Smoke run (a few seconds per scenario, debug build, asserts numbers and no failures; CI):
#   bench/run.sh --smoke
# Installs wrk, redis-server and curl with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in wrk redis-server curl taskset; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  packages=("${missing[@]/taskset/util-linux}")
  echo "bench: installing ${packages[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if [ "${1:-}" = "--smoke" ]; then
  cargo build -q -p ticketgate -p ticketgate-bench --bins
  exec python3 bench/run.py --smoke --profile dev
fi
cargo build -q --release -p ticketgate -p ticketgate-bench --bins
exec python3 bench/run.py "$@"
