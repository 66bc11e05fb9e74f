#!/usr/bin/env bash
# The test command: installs what is missing, then runs every test (unit and end-to-end,
# which start real upstreams, JWKS servers and ticketgate itself on loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --all-targets "$@"
