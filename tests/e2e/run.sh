#!/usr/bin/env bash
# Browser end-to-end test: Debian's chromium, driven by playwright-core, uses the example SPA
# (examples/spa) through token-handler, twice:
#
#   1. against the real OpenID Provider of the integration tests (tests/oidc, oidc-provider) with
#      JWT access tokens that live 8 s, 12 KB ID tokens and 6 KB refresh tokens (so their cookies
#      are split into chunks): token-handler, the example API and the SPA's origin come from the
#      demo binary with --issuer;
#   2. against `cargo run --example demo` as a user starts it (its development provider, 30 s
#      access tokens).
#
# Each run: sign in on the provider's own pages, see the user's name, call the API, wait past the
# access token's expiry, call again (transparent refresh, shown by the SPA), sign out, and check
# that no cookie is left. Screenshots go to target/e2e/; the "token refreshed" one of run 2
# becomes docs/demo.png when that file is missing or E2E_UPDATE_DOCS=1.
#
# Usage:  bash tests/e2e/run.sh
# Needs:  cargo, node >= 20, npm, curl; chromium (installed with apt-get when missing)
# Env:    E2E_PORT         first of 5 consecutive loopback ports (default 18080)
#         E2E_TIMEOUT      seconds for the whole script, build included (default 900)
#         E2E_UPDATE_DOCS  1: replace docs/demo.png with this run's screenshot
#         CARGO_TARGET_DIR as usual (default target/)
#         CHROMIUM         browser executable (default /usr/bin/chromium)
set -euo pipefail

# The whole script is bounded in time: re-run under `timeout`, which sends TERM to this script
# and everything it started (one process group); the trap below then stops what is left.
if [[ -z "${E2E_UNDER_TIMEOUT:-}" ]]; then
  export E2E_UNDER_TIMEOUT=1
  exec timeout -k 15 "${E2E_TIMEOUT:-900}" bash "${BASH_SOURCE[0]}" "$@"
fi

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)
PORT=${E2E_PORT:-18080}            # the SPA's origin: SPA files, /oauth-agent, /api
OP_PORT=$((PORT + 1))              # the demo's development provider (run 2)
API_PORT=$((PORT + 2))             # the example API
TH_PORT=$((PORT + 3))              # token-handler
OIDC_PORT=$((PORT + 4))            # oidc-provider (run 1)
SPA="http://localhost:$PORT"
AUDIENCE="http://localhost:8082"   # the example API's audience (the demo's default)
SHOTS="$ROOT/target/e2e"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/th-e2e.XXXXXX")
PIDS=()        # servers, stopped by PID at the end of each run and on exit
FG_PID=""      # the step in progress (see fg)
START=$(date +%s)

step() { printf '\n==> [%3ds] %s\n' $(($(date +%s) - START)) "$*"; }
die() { echo "FAIL: $*" >&2; exit 1; }

stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
}

# Runs a step in the background and waits for it: unlike a foreground command, `wait` returns
# as soon as a signal arrives, so the EXIT trap can stop everything without delay.
fg() {
  "$@" &
  FG_PID=$!
  local rc=0
  wait "$FG_PID" || rc=$?
  FG_PID=""
  return "$rc"
}

cleanup() {
  local rc=$?
  [[ -n "$FG_PID" ]] && stop_pid "$FG_PID"
  stop_all
  if [[ $rc -ne 0 ]]; then
    for f in "$WORK"/*.log; do
      [[ -f "$f" ]] || continue
      echo "---- last lines of $(basename "$f") ----" >&2
      tail -n 25 "$f" >&2
    done
    [[ $rc -eq 143 ]] && echo "FAIL: stopped by SIGTERM (E2E_TIMEOUT is ${E2E_TIMEOUT:-900} s)" >&2
    echo "E2E FAILED (screenshots in $SHOTS)" >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_http() { # URL SECONDS PID: until URL answers, or fail when PID died
  local url=$1 seconds=$2 pid=$3
  for _ in $(seq 1 $((seconds * 10))); do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || die "the process for $url exited"
    sleep 0.1
  done
  die "$url did not answer within $seconds s"
}

# -------------------------------------------------------------------------------------------
step "prerequisites"
command -v node >/dev/null || die "node (>= 20) is required"
command -v curl >/dev/null || die "curl is required"
if [[ ! -x "$CHROMIUM" ]]; then
  SUDO=""; [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
[[ -x "$CHROMIUM" ]] || die "no browser at $CHROMIUM"
[[ -d tests/e2e/node_modules/playwright-core ]] || npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error
[[ -d tests/oidc/node_modules/oidc-provider ]] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
for p in "$PORT" "$OP_PORT" "$API_PORT" "$TH_PORT" "$OIDC_PORT"; do
  port_free "$p" || die "port $p is in use; choose other ports with E2E_PORT=<first of 5 free ports>"
done
echo "node $(node --version), $("$CHROMIUM" --version 2>/dev/null), ports $PORT-$OIDC_PORT"

step "build the demo (cargo build --example demo)"
fg cargo build --example demo
DEMO="$TARGET_DIR/debug/examples/demo"
[[ -x "$DEMO" ]] || die "no demo binary at $DEMO"
mkdir -p "$SHOTS" "$ROOT/docs"
rm -f "$SHOTS"/*.png

# -------------------------------------------------------------------------------------------
step "run 1: the real OpenID Provider (tests/oidc, oidc-provider) with 8 s JWT access tokens"
OIDC_CONFIG=$(cat <<EOF
{"jwtAccessTokens": {"audience": "$AUDIENCE"}, "accessTokenTtl": 8,
 "bigTokens": {"idToken": 12288, "refreshToken": 6000},
 "clients": [{"client_id": "spa-client", "client_secret": "spa-secret",
   "token_endpoint_auth_method": "client_secret_basic",
   "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
   "redirect_uris": ["$SPA/"], "post_logout_redirect_uris": ["$SPA/"]}]}
EOF
)
PORT=$OIDC_PORT OIDC_CONFIG="$OIDC_CONFIG" MAX_LIFETIME_SECONDS=300 \
  node tests/oidc/provider.mjs </dev/null >"$WORK/oidc-provider.out" 2>"$WORK/oidc-provider.log" &
PIDS+=($!)
OP_PID=$!
for _ in $(seq 1 200); do
  grep -q '"issuer"' "$WORK/oidc-provider.out" 2>/dev/null && break
  kill -0 "$OP_PID" 2>/dev/null || die "oidc-provider exited"
  sleep 0.1
done
ISSUER=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").split("\n")[0]).issuer)' "$WORK/oidc-provider.out")
[[ "$ISSUER" == "http://127.0.0.1:$OIDC_PORT" ]] || die "unexpected issuer line: $(cat "$WORK/oidc-provider.out")"
echo "oidc-provider: $ISSUER (pid $OP_PID)"

"$DEMO" --port "$PORT" --api-port "$API_PORT" --th-port "$TH_PORT" \
  --issuer "$ISSUER" --client-id spa-client --client-secret spa-secret \
  --audience "$AUDIENCE" --refresh-ahead 2s >"$WORK/demo-with-oidc-provider.log" 2>&1 &
PIDS+=($!)
wait_http "$SPA/" 30 $!
echo "token-handler + example API + SPA origin: $SPA (pid $!)"

SPA_URL="$SPA/" ISSUER="$ISSUER" PROVIDER=oidc-provider LOGIN=alice EXPECT_NAME="Test User alice" \
  EXPECT_CHUNKS="th-id th-auth" SHOTS="$SHOTS" SHOT_PREFIX=1-oidc-provider \
  fg timeout 120 node tests/e2e/browser-test.mjs
stop_all

# -------------------------------------------------------------------------------------------
step "run 2: cargo run --example demo (its development provider, 30 s access tokens)"
# `cargo run` replaces itself with the demo (exec), so $! is the demo's own PID.
cargo run -q --example demo -- --port "$PORT" --op-port "$OP_PORT" --api-port "$API_PORT" \
  --th-port "$TH_PORT" >"$WORK/demo.log" 2>&1 &
PIDS+=($!)
wait_http "$SPA/" 60 $!
echo "demo: $SPA, development provider http://localhost:$OP_PORT (pid $!)"

DOCS_SHOT=""
if [[ ! -f docs/demo.png || "${E2E_UPDATE_DOCS:-}" == 1 ]]; then DOCS_SHOT="$ROOT/docs/demo.png"; fi
SPA_URL="$SPA/" ISSUER="http://localhost:$OP_PORT" PROVIDER=dev LOGIN="Ada Lovelace" \
  EXPECT_NAME="Ada Lovelace" SHOTS="$SHOTS" SHOT_PREFIX=2-demo DOCS_SHOT="$DOCS_SHOT" \
  fg timeout 150 node tests/e2e/browser-test.mjs
stop_all

step "E2E PASSED: 2 runs in $(($(date +%s) - START)) s; screenshots in ${SHOTS#"$ROOT"/}/"
ls "$SHOTS"
