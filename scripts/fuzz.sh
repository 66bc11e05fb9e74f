#!/usr/bin/env bash
# Fuzzes every target in fuzz/ for SECONDS each (default 20), starting from its checked-in
# corpus (copied, so the run does not rewrite it). Needs a nightly toolchain; cargo-fuzz is
# installed from crates.io when missing. Without nightly it says so and exits 0: the corpus
# replay test in src/fuzzing.rs runs the same functions on stable in scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain; the corpus replay (src/fuzzing.rs) covers the targets on stable" >&2
  exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd fuzz
for target in $(cargo +nightly fuzz list); do
  cp -r "corpus/$target" "$work/$target"
  echo "fuzz: $target for ${seconds}s" >&2
  if ! cargo +nightly fuzz run "$target" "$work/$target" -- -max_total_time="$seconds" \
    >"$work/$target.log" 2>&1; then
    tail -n 40 "$work/$target.log" >&2
    echo "fuzz: $target failed; the crashing input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$work/$target.log" >&2 || true
done
