#!/usr/bin/env bash
# The test command: installs what is missing, then runs every test: unit and end-to-end in
# Rust (real upstreams, JWKS servers, redis-server and ticketgate itself on loopback ports),
# then the browser helper and its STOMP adapter against the binary in Node (clients/js), and
# the demo in headless Chromium (tests/browser, playwright-core from npm).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The demo (the browser tests run it; the end-to-end tests use its echo upstream) and the
# fuzzing entry points (their corpus replay) are features, off in production builds.
cargo test --all-targets --features demo,fuzzing "$@"
(cd clients/js && npm ci --no-audit --no-fund --silent && npm test)
(cd tests/browser && npm ci --no-audit --no-fund --silent && npm test)
