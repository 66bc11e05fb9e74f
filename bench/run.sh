#!/usr/bin/env bash
# The benchmark command. Full run (about 15 minutes on 2 cores after the build, writes BENCHMARKS.md):
#   bench/run.sh
# Smoke run (a few seconds per scenario, debug build, asserts numbers and no failures; CI):
#   bench/run.sh --smoke
# Installs wrk, redis-server, curl, haproxy, nginx and OpenSSL's headers with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in wrk redis-server curl taskset haproxy nginx openssl pkg-config; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  packages=("${missing[@]/taskset/util-linux}")
  packages=("${packages[@]/#nginx/nginx-light}")
  echo "bench: installing ${packages[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# The TLS table's other backend: Pingora on its openssl feature, a build of its own.
openssl_server() {
  cargo build -q "$@" --manifest-path bench/tls-openssl/Cargo.toml --target-dir target/tls-openssl
}
if [ "${1:-}" = "--smoke" ]; then
  # The features of scripts/test.sh's build, so CI's smoke run reuses it.
  cargo build -q -p ticketgate -p ticketgate-bench --bins --features ticketgate/demo,ticketgate/fuzzing
  openssl_server
  exec python3 bench/run.py --smoke --profile dev
fi
cargo build -q --release -p ticketgate -p ticketgate-bench --bins
openssl_server --release
exec python3 bench/run.py "$@"
