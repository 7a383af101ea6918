#!/usr/bin/env bash
# Installs what gluu-ha needs to build, test and benchmark on Debian, when it is missing:
# Debian's redis-server and redis-tools (the real Redis and redis-benchmark), stunnel4 and
# nginx (the peers we are tested and benchmarked against), openssl (the guide's key
# recipe), a C compiler (aws-lc-rs builds its crypto from C), prlimit, wrk and h2load (the
# load generators of `gluu-bench lb`), csync2 (the peer of `gluu-bench fsync`), groff and
# systemd-analyze (the tests render the man pages and check the units), debootstrap and
# systemd-nspawn (a test boots the units under a real systemd in a Debian container, see
# scripts/rootfs.sh), ip, tc and ss (iproute2: gluu-fsync tests slow down and cut the
# loopback of a network namespace of their own), and a Rust toolchain >= 1.88 through rustup.
# Sourced by scripts/box.sh and scripts/test.sh so that PATH changes reach them; running it
# on its own works too. Needs root (or sudo) only when something must be installed.
set -euo pipefail

gluu_need_packages() {
    local missing=() cmd pkg
    for pair in redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools \
        stunnel4:stunnel4 nginx:nginx openssl:openssl cc:build-essential make:make curl:curl \
        pkill:procps prlimit:util-linux groff:groff-base systemd-analyze:systemd wrk:wrk h2load:nghttp2-client csync2:csync2 \
        debootstrap:debootstrap systemd-nspawn:systemd-container nsenter:util-linux ip:iproute2 tc:iproute2 ss:iproute2; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "setup: need root to install: ${missing[*]}" >&2; return 1; }
        sudo="sudo"
    fi
    echo "setup: installing ${missing[*]}" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" ca-certificates >/dev/null
}

gluu_rust_ok() {
    command -v cargo >/dev/null 2>&1 || return 1
    local v
    v=$(rustc --version | awk '{print $2}')
    [ "$(printf '%s\n1.88.0\n' "$v" | sort -V | head -n1)" = "1.88.0" ]
}

gluu_need_rust() {
    [ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
    gluu_rust_ok && return 0
    if command -v rustup >/dev/null 2>&1; then
        rustup toolchain install stable --profile minimal -c clippy,rustfmt
        rustup default stable
    else
        echo "setup: installing Rust (stable) with rustup" >&2
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --profile minimal -c clippy,rustfmt
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    gluu_rust_ok || { echo "setup: Rust >= 1.88 is required, found $(rustc --version 2>&1)" >&2; return 1; }
}

gluu_need_packages
gluu_need_rust
