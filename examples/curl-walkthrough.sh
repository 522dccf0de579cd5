#!/usr/bin/env bash
# A whole session with token-handler, driven by curl and one cookie jar (the "browser"):
# login/start, the test provider's login and consent pages, login/end, userInfo, claims,
# refresh, logout.
#
# It starts the test OpenID Provider (tests/oidc/provider.mjs, on 127.0.0.1) and token-handler
# (`cargo run -q -- --config <temp file>`, on localhost), and stops both by PID when it ends.
# Every curl call has a timeout. It exits non-zero as soon as a step fails.
#
# Usage:   bash examples/curl-walkthrough.sh
# Needs:   cargo, node >= 18, npm (first run only), curl
# Env:     TH_CMD   command that runs token-handler (default: "cargo run -q --")
#          VERBOSE=1 prints full response bodies instead of abbreviated ones
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/th-walkthrough.XXXXXX")
JAR="$WORK/jar.txt"
ORIGIN="https://www.example.test"         # the SPA's origin (web.trusted_origins)
REDIRECT_URI="https://www.example.test/"  # registered for spa-client at the test provider
read -r -a TH_CMD <<<"${TH_CMD:-cargo run -q --}"
PROVIDER_PID=""
TH_PID=""
STDIN_FD=""

cleanup() {
  local rc=$?
  [[ -n "$STDIN_FD" ]] && { exec {STDIN_FD}>&- || true; }
  for pid in $TH_PID $PROVIDER_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true   # reap it: both are children of this shell
  done
  if [[ $rc -ne 0 ]]; then
    echo "---- token-handler log ----" >&2; tail -n 30 "$WORK/th.log" 2>/dev/null >&2 || true
    echo "---- provider stderr ----" >&2; tail -n 30 "$WORK/provider.err" 2>/dev/null >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "FAIL: $*" >&2; exit 1; }
show() { # abbreviate long values (tokens, sealed cookies) unless VERBOSE=1
  if [[ "${VERBOSE:-}" == 1 ]]; then cat; else sed -E 's/([A-Za-z0-9_-]{24})[A-Za-z0-9_.%-]{16,}/\1.../g'; fi
}
json() { node -e 'const v=JSON.parse(require("fs").readFileSync(0,"utf8"))[process.argv[1]];process.stdout.write(v==null?"":String(v))' "$1"; }
# curl as the browser: shared jar, bounded, never follows redirects.
c() { curl -sS --connect-timeout 5 --max-time 15 -b "$JAR" -c "$JAR" "$@"; }
# call METHOD URL [curl args...] -> prints the command, status and body; body in $WORK/body
call() {
  local method=$1 url=$2; shift 2
  printf '\n$ curl -X %s %s' "$method" "$url"
  local a; for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+-]+$ ]]; then printf ' %s' "$a"; else printf " '%s'" "${a//\'/\'\\\'\'}"; fi
  done | show; echo
  STATUS=$(c -X "$method" "$url" -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' "$@")
  echo "HTTP $STATUS"
  grep -i '^set-cookie:' "$WORK/headers" | tr -d '\r' | show || true
  [[ -s "$WORK/body" ]] && { show <"$WORK/body"; echo; }
  return 0
}
expect() { [[ "$STATUS" == "$1" ]] || die "expected HTTP $1, got $STATUS: $(cat "$WORK/body")"; }

# ------------------------------------------------------------------------------------------
echo "== start the test OpenID Provider"
[[ -d tests/oidc/node_modules/oidc-provider ]] || timeout 300 npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
mkfifo "$WORK/provider.stdin"
MAX_LIFETIME_SECONDS=300 node tests/oidc/provider.mjs <"$WORK/provider.stdin" >"$WORK/provider.out" 2>"$WORK/provider.err" &
PROVIDER_PID=$!
exec {STDIN_FD}>"$WORK/provider.stdin"   # the provider exits when this script (and the fd) goes
for _ in $(seq 1 200); do
  [[ -s "$WORK/provider.out" ]] && break
  kill -0 "$PROVIDER_PID" 2>/dev/null || die "the provider exited"
  sleep 0.1
done
ISSUER=$(head -n1 "$WORK/provider.out" | json issuer)
[[ "$ISSUER" == http://127.0.0.1:* ]] || die "no issuer line from the provider"
echo "issuer $ISSUER (pid $PROVIDER_PID)"

# ------------------------------------------------------------------------------------------
echo "== start token-handler"
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
TH="http://localhost:$PORT/oauth-agent"
cat >"$WORK/config.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"

[cookies]
keys = ["$(timeout 600 "${TH_CMD[@]}" keygen)"]

[web]
trusted_origins = ["$ORIGIN"]

[[providers]]
id = "default"
issuer = "$ISSUER"
client_id = "spa-client"
client_secret = "spa-secret"
redirect_uri = "$REDIRECT_URI"
post_logout_redirect_uri = "$REDIRECT_URI"
EOF
NO_COLOR=1 "${TH_CMD[@]}" --config "$WORK/config.toml" >"$WORK/th.log" 2>&1 &
TH_PID=$!
for _ in $(seq 1 300); do
  curl -s -o /dev/null --max-time 1 "$TH/userInfo" && break
  kill -0 "$TH_PID" 2>/dev/null || die "token-handler exited"
  sleep 0.1
done
curl -s -o /dev/null --max-time 2 "$TH/userInfo" || die "token-handler does not answer on $TH"
echo "token-handler on $TH (pid $TH_PID)"

# ------------------------------------------------------------------------------------------
echo; echo "== 1. login/start: the SPA asks where to send the browser"
call POST "$TH/login/start" -H "Origin: $ORIGIN"
expect 200
AUTH_URL=$(json authorizationRequestUrl <"$WORK/body")

echo; echo "== 2. the browser at the provider: authorization request, login and consent pages"
next() { c -o "$WORK/page" -w '%{http_code} %{redirect_url}' "$@"; }
r=$(next "$AUTH_URL");                                          echo "GET  authorization request -> $r" | show
[[ $r == "303 $ISSUER/interaction/"* ]] || die "unexpected answer: $r"
LOGIN_PAGE=${r#* }
r=$(next "$LOGIN_PAGE");                                        echo "GET  login page            -> ${r% }"
grep -q 'name="prompt" value="login"' "$WORK/page" || die "not the login page"
r=$(next "$LOGIN_PAGE" -d prompt=login -d login=alice -d password=any); echo "POST login=alice           -> $r"
r=$(next "${r#* }");                                            echo "GET  resume                -> $r"
CONSENT_PAGE=${r#* }
r=$(next "$CONSENT_PAGE");                                      echo "GET  consent page          -> ${r% }"
grep -q 'name="prompt" value="consent"' "$WORK/page" || die "not the consent page"
r=$(next "$CONSENT_PAGE" -d prompt=consent);                    echo "POST consent               -> $r"
r=$(next "${r#* }");                                            echo "GET  resume                -> $r" | show
[[ $r == "303 $REDIRECT_URI?"*code=* ]] || die "no redirect to the SPA with a code: $r"
CALLBACK=${r#* }

echo; echo "== 3. login/end: the SPA hands its URL (with code, state, iss) to token-handler"
BODY=$(node -e 'process.stdout.write(JSON.stringify({pageUrl: process.argv[1]}))' "$CALLBACK")
call POST "$TH/login/end" -H "Origin: $ORIGIN" -H 'Content-Type: application/json' -d "$BODY"
expect 200
[[ "$(json isLoggedIn <"$WORK/body")" == true ]] || die "not logged in"
CSRF=$(json csrf <"$WORK/body")
[[ -n "$CSRF" ]] || die "no csrf value"

echo; echo "== 4. userInfo and claims (GET: no CSRF header needed)"
call GET "$TH/userInfo" -H "Origin: $ORIGIN"
expect 200
[[ "$(json sub <"$WORK/body")" == alice ]] || die "userInfo is not alice"
call GET "$TH/claims" -H "Origin: $ORIGIN"
expect 200
[[ "$(json iss <"$WORK/body")" == "$ISSUER" ]] || die "claims iss is not the issuer"

echo; echo "== 5. refresh: without the CSRF header it is refused, with it the cookies are rewritten"
call POST "$TH/refresh" -H "Origin: $ORIGIN"
expect 401
call POST "$TH/refresh" -H "Origin: $ORIGIN" -H "x-th-csrf: $CSRF"
expect 204
call GET "$TH/userInfo" -H "Origin: $ORIGIN"
expect 200

echo; echo "== 6. logout: revokes the refresh token, clears every cookie, returns the end-session URL"
call POST "$TH/logout" -H "Origin: $ORIGIN" -H "x-th-csrf: $CSRF"
expect 200
[[ "$(json url <"$WORK/body")" == "$ISSUER/session/end?"* ]] || die "no end-session URL"
# With cookies.secure (the default) the names carry the prefixes browsers enforce:
# __Host-th-at and __Host-th-csrf (Path=/, no Domain), __Secure-th-login, -auth and -id.
for name in th-login th-at th-auth th-id th-csrf; do
  grep -Eqi "^set-cookie: (__Host-|__Secure-)?$name=;.*Max-Age=0" "$WORK/headers" || die "logout did not clear $name"
done

echo; echo "== 7. after logout"
# A browser drops the cleared cookies. curl 7.88 keeps some cookies it loaded from the jar file
# although the response expired them (a curl cookie-jar quirk): what it still sends is a sealed
# copy of the access token, which the provider revoked at logout, and of the ID token. Such
# left-overs open nothing new: /claims (and /userInfo with userinfo_source = "auto", which
# answers from the ID token when the provider refuses the access token) show the claims sealed
# at login, while the refresh token is revoked, and an API that introspects the access token
# refuses it.
echo "th- cookies left in curl's jar: $(grep -Eo $'\t(__Host-|__Secure-)?th-[a-z.0-9]*\t' "$JAR" | tr -d '\t' | sort | uniq | tr '\n' ' ')"
# What a browser sends after logout: no token-handler cookie at all.
: >"$JAR"
call GET "$TH/userInfo" -H "Origin: $ORIGIN"
expect 401
[[ "$(json code <"$WORK/body")" == unauthorized_request ]] || die "after logout: not unauthorized_request"
echo "provider counters: $(curl -sS --max-time 5 "$ISSUER/test/stats")"

echo; echo "walkthrough passed"
