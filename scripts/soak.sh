#!/usr/bin/env bash
# Soak: SECONDS (default 60) of proxied calls and refreshes through nginx against three replicas
# of the release build, with the real test OpenID Provider. Prints requests, errors and each
# replica's RSS at the start and the end. Everything runs on loopback and is stopped by PID.
# Usage: scripts/soak.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo;
  $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null; }
[ -d tests/oidc/node_modules/oidc-provider ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
SOAK_SECONDS="${1:-60}" RUST_LOG=warn timeout $(( ${1:-60} + 300 )) \
  cargo test --release --test api replicas::soak -- --ignored --nocapture 2>&1 | grep -E "^soak:|test result|panicked"
