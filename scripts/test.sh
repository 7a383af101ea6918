#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing (scripts/setup.sh), checks
# formatting and lints, then runs every unit and integration test against real redis-server
# and stunnel processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# One build of everything: incremental state would only take disk (0.5 GB on a clean clone).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole suite (cargo prints one per test binary, the last of which
# is often a binary with no tests of its own).
awk '/^test result:/ { p += $4; f += $6 } END { printf "gluu-ha: %d passed, %d failed\n", p, f }' "$log"
