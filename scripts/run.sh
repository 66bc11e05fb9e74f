#!/usr/bin/env bash
# The run command: builds ticketgate and runs it on conf/ticketgate.yaml in front of a
# stand-in legacy service (Python's http.server on 127.0.0.1:9000), so a newcomer sees
# requests pass and get refused. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bin ticketgate

python3 -m http.server 9000 --bind 127.0.0.1 --directory conf >/dev/null 2>&1 &
upstream=$!
trap 'kill $upstream 2>/dev/null' EXIT

cat <<'MSG'
ticketgate on http://127.0.0.1:8080 (admin on http://127.0.0.1:9090), upstream 127.0.0.1:9000
Try, in another terminal:
  curl -i http://127.0.0.1:8080/public/            # auth: none -> the upstream answers
  curl -i http://127.0.0.1:8080/private            # auth: jwt  -> 401 with WWW-Authenticate
  curl -s http://127.0.0.1:9090/metrics | grep ticketgate_
MSG
target/release/ticketgate run --config conf/ticketgate.yaml
