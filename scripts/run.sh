#!/usr/bin/env bash
# The run command: builds ticketgate and starts `ticketgate demo` — ticketgate, an echo
# upstream and a development identity provider — then prints the URL to open. Ctrl-C stops it.
# Another address: scripts/run.sh --listen 127.0.0.1:8000 --admin-listen 127.0.0.1:9000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
cargo build --profile demo --features demo --bin ticketgate
exec "${CARGO_TARGET_DIR:-target}/demo/ticketgate" demo "$@"
