#!/usr/bin/env bash
# Cluster in a box: installs what is missing, builds gluu-ha in release mode and runs
# gluu-box, which brings the guide's whole topology up on loopback (two Gluu-like nodes,
# gluu-lb in front with the guide's nginx.conf, Redis behind gluu-tunnel, gluu-fsync on each
# node) and walks through what the guide promises. Ctrl-C stops everything it started.
# Extra arguments go to gluu-box (--check: exit after the walkthrough, non-zero on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked --workspace
exec target/release/gluu-box "$@"
