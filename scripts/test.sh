#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs them.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "test OpenID Provider (oidc-provider, from the npm registry)"
command -v node >/dev/null || { echo "node (>= 18) is required for the test OpenID Provider" >&2; exit 1; }
npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error

step "Python test providers (django-oauth-toolkit, django-oidc-provider; from PyPI, in one virtual environment)"
bash tests/providers/install.sh

step "nginx (Debian's package; the gateway test runs it on loopback)"
if ! command -v nginx >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
nginx -v

step "redis-server (Debian's package; the shared-store tests run it on loopback)"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
redis-server --version

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --all-targets --locked -- -D warnings

step "unused dependencies (cargo-machete, from crates.io)"
# Installed once per machine (pinned, --locked), then reused; the timeout bounds a slow registry.
# A dependency it wrongly reports goes in Cargo.toml's [package.metadata.cargo-machete] ignored.
if ! cargo machete --version >/dev/null 2>&1; then
  timeout 600 cargo install cargo-machete --version 0.9.2 --locked --quiet
fi
cargo machete

step "tests"
cargo test --locked --all-targets

step "SPA client module (node --test, no browser)"
node --test tests/spa/

step "browser end-to-end (Debian's chromium driven by playwright-core)"
bash tests/e2e/run.sh
