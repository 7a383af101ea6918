#!/usr/bin/env bash
# Cluster in a box: installs what is missing, builds gluu-ha in release mode and runs
# gluu-box, which brings the guide's Redis leg up on loopback and walks through it.
# Extra arguments go to gluu-box (--check: exit after the walkthrough).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked --workspace
exec target/release/gluu-box "$@"
