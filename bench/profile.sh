#!/usr/bin/env bash
# Where the per-request time goes: runs the plain Pingora passthrough and ticketgate (bench
# config) under valgrind's callgrind (instruction counts: repeatable, unlike timings), sends
# 10 s of requests to the passthrough, ticketgate `auth: none` (with and without a JWT's
# `Authorization` header, which it passes on untouched) and cached HS256 and RS256 JWT routes,
# and prints instructions per request and the most expensive functions of each. Needs
# valgrind and wrk.
#   bench/profile.sh            (after bench/run.sh has built the release binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

read -r config port < <(python3 -c "
import sys; sys.path.insert(0, 'bench'); import run
from pathlib import Path
upstream = run.free_port()
path, port = run.ticketgate_config(Path('$work'), 'profile', upstream, 'memory')
print(path, port, upstream)" | { read -r c p u; echo "$c $p"; echo "$u" > "$work/upstream"; })
upstream=$(cat "$work/upstream")
"$bin/upstream" --listen "127.0.0.1:$upstream" & pids+=($!)
token=$("$bin/tokens" --alg HS256 --keys tests/fixtures --issuer bench-HS256)
rs256=$("$bin/tokens" --alg RS256 --keys tests/fixtures --issuer bench-RS256)
start_profiled() {  # port, command...
  local port=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$work/cg" "$@" >>"$work/vg.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$port/none" && break; sleep 0.2; done
}

profile() {  # name, then wrk arguments
  local name=$1; shift
  wrk -t1 -c8 -d2s "$@" >/dev/null             # warm-up: pools, caches
  callgrind_control -z >/dev/null 2>&1
  local requests
  requests=$(wrk -t1 -c8 -d10s "$@" | awk '/requests in/ {print $1}')
  callgrind_control -d "$name" >/dev/null
  # The dump is written after callgrind_control returns: wait for the file that names it.
  local file="" total
  for _ in $(seq 1 150); do
    file=$(grep -l -x "desc: Trigger: dump $name" "$work"/cg.* 2>/dev/null | head -1) && [ -n "$file" ] && break
    sleep 0.2
  done
  [ -n "$file" ] || { echo "profile: no callgrind dump for $name" >&2; exit 1; }
  total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "== $name: $requests requests, $((total / requests)) instructions per request"
  # Self cost, without the thread and runtime frames that carry everything.
  callgrind_annotate --threshold=100 "$file" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,$p' |
    grep -vE 'clone|start_thread|thread_start|call_once|backtrace|enter_runtime|block_on|tokio::runtime' | head -15 | cut -c1-150 || true
}
passthrough_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_profiled "$passthrough_port" "$bin/passthrough" --listen "127.0.0.1:$passthrough_port" --upstream "127.0.0.1:$upstream"
profile "Pingora passthrough" "http://127.0.0.1:$passthrough_port/none"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
rm -f "$work"/cg*
start_profiled "$port" "$bin/ticketgate" run -c "$config"
profile "ticketgate auth: none" "http://127.0.0.1:$port/none"
profile "ticketgate auth: none, with the HS256 token header" -H "Authorization: Bearer $token" "http://127.0.0.1:$port/none"
profile "ticketgate jwt HS256, cached" -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api"
profile "ticketgate auth: none, with the RS256 token header" -H "Authorization: Bearer $rs256" "http://127.0.0.1:$port/none"
profile "ticketgate jwt RS256, cached" -H "Authorization: Bearer $rs256" "http://127.0.0.1:$port/api"
