#!/usr/bin/env bash
# Installs what a fresh machine with only the Rust toolchain lacks for building and testing
# ticketgate: cmake (Pingora's zlib-ng build needs it), redis-server and redis-sentinel (the
# ticket-store tests run real nodes, a Cluster and a Sentinel-managed master), RabbitMQ (its web_stomp plugin is the STOMP broker of the browser test of
# the STOMP adapter), Chromium and Node.js (the browser tests drive headless Chromium).
# Uses apt-get as root or with sudo; otherwise says what to install.
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# `setup.sh build`: only what building needs (scripts/run.sh), not the test servers.
if [ "${1:-}" != "build" ]; then
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing ${missing[*]} with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing ${missing[*]} with sudo apt-get" >&2
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: please install: ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
  exit 1
fi
