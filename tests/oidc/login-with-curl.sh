#!/usr/bin/env bash
# End-to-end proof that the test OpenID Provider (provider.mjs) works for a non-browser
# client: authorization code + PKCE S256 through oidc-provider's devInteractions
# (login + consent) with curl and a cookie jar, token exchange, userinfo, refresh,
# revocation, RP-initiated logout, the /test/stats counters, and the provider exiting
# by itself when its stdin is closed.
#
# Usage: bash tests/oidc/login-with-curl.sh      (needs node >= 18, curl, openssl)
# Exits 0 only if every step passed. Every curl call has a timeout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
START_NS=$(date +%s%N)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oidc-curl.XXXXXX")
JAR="$WORK/cookies.txt"
PROVIDER_PID=""
STDIN_FD=""
STEP=0

CURL=(curl -sS --connect-timeout 5 --max-time 10 --cookie "$JAR" --cookie-jar "$JAR")
CLIENT_ID=spa-client
CLIENT_SECRET=spa-secret
REDIRECT_URI=https://www.example.test/
LOGIN=alice

cleanup() {
  local rc=$?
  if [[ -n "${STDIN_FD:-}" ]]; then exec {STDIN_FD}>&- || true; fi
  if [[ -n "$PROVIDER_PID" ]] && kill -0 "$PROVIDER_PID" 2>/dev/null; then
    kill -TERM "$PROVIDER_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$PROVIDER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PROVIDER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -s "$WORK/provider.stderr" ]]; then
    echo "---- provider stderr ----" >&2
    cat "$WORK/provider.stderr" >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { STEP=$((STEP + 1)); printf '\n[%02d] %s\n' "$STEP" "$*"; }
ok() { printf '     ok: %s\n' "$*"; }
die() { printf '     FAIL: %s\n' "$*" >&2; exit 1; }

# jget KEY < json  -> the value (objects/arrays as JSON, missing as empty string)
jget() {
  node -e '
    const o = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const v = process.argv[1].split(".").reduce((a, k) => (a == null ? undefined : a[k]), o);
    process.stdout.write(v === undefined || v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
  ' "$1"
}

# req OUT_PREFIX CURL_ARGS... -> prints the HTTP status; headers in OUT.h, body in OUT.b
req() {
  local out=$1; shift
  "${CURL[@]}" -D "$out.h" -o "$out.b" -w '%{http_code}' "$@"
}
header() { grep -i "^$2:" "$1.h" | head -n1 | cut -d' ' -f2- | tr -d '\r'; }
# absolute URL for a (possibly relative) Location
absolute() { case "$1" in http://*|https://*) printf '%s' "$1" ;; /*) printf '%s%s' "$ISSUER" "$1" ;; *) die "unexpected Location $1" ;; esac; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
expect_status() { [[ "$1" == "$2" ]] || { echo "     response headers:"; cat "$3.h" 2>/dev/null || true; echo "     body: $(head -c 600 "$3.b" 2>/dev/null)"; die "expected HTTP $2, got $1"; }; }

# ---------------------------------------------------------------------------------------
step "install dependencies (npm ci) if needed"
if [[ ! -d "$HERE/node_modules/oidc-provider" ]]; then
  timeout 300 npm ci --prefix "$HERE" --no-audit --no-fund >&2
fi
ok "oidc-provider $(node -p "require('$HERE/node_modules/oidc-provider/package.json').version")"

# ---------------------------------------------------------------------------------------
step "start provider.mjs with a piped stdin (a FIFO whose write end this script holds)"
mkfifo "$WORK/stdin"
PORT= OIDC_CONFIG= MAX_LIFETIME_SECONDS=120 node "$HERE/provider.mjs" <"$WORK/stdin" >"$WORK/provider.stdout" 2>"$WORK/provider.stderr" &
PROVIDER_PID=$!
exec {STDIN_FD}>"$WORK/stdin"   # the provider's stdin stays open as long as this fd is
for _ in $(seq 1 200); do   # at most ~20 s
  if [[ -s "$WORK/provider.stdout" ]] && [[ "$(tail -c1 "$WORK/provider.stdout" | od -An -c | tr -d ' ')" == '\n' ]]; then break; fi
  kill -0 "$PROVIDER_PID" 2>/dev/null || die "provider exited before printing its issuer"
  sleep 0.1
done
[[ -s "$WORK/provider.stdout" ]] || die "provider printed no issuer within 20 s"
ISSUER=$(head -n1 "$WORK/provider.stdout" | jget issuer)
[[ "$ISSUER" =~ ^http://127\.0\.0\.1:[0-9]+$ ]] || die "bad issuer line: $(head -n1 "$WORK/provider.stdout")"
ok "pid $PROVIDER_PID, issuer $ISSUER"

# ---------------------------------------------------------------------------------------
step "discovery"
s=$(req "$WORK/disco" "$ISSUER/.well-known/openid-configuration"); expect_status "$s" 200 "$WORK/disco"
D="$WORK/disco.b"
[[ "$(jget issuer <"$D")" == "$ISSUER" ]] || die "discovery issuer mismatch"
AUTHZ=$(jget authorization_endpoint <"$D"); TOKEN=$(jget token_endpoint <"$D")
USERINFO=$(jget userinfo_endpoint <"$D"); REVOKE=$(jget revocation_endpoint <"$D")
END_SESSION=$(jget end_session_endpoint <"$D"); JWKS=$(jget jwks_uri <"$D")
for v in AUTHZ TOKEN USERINFO REVOKE END_SESSION JWKS; do [[ -n "${!v}" ]] || die "discovery lacks $v"; done
[[ "$(jget code_challenge_methods_supported <"$D")" == '["S256"]' ]] || die "PKCE methods not [S256]"
ok "authorization=$AUTHZ token=$TOKEN userinfo=$USERINFO revocation=$REVOKE end_session=$END_SESSION"

# ---------------------------------------------------------------------------------------
step "authorization request without PKCE is refused"
s=$(req "$WORK/nopkce" -G "$AUTHZ" --data-urlencode client_id=$CLIENT_ID --data-urlencode response_type=code \
  --data-urlencode scope=openid --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode state=x)
expect_status "$s" 303 "$WORK/nopkce"
loc=$(header "$WORK/nopkce" location)
[[ "$loc" == "$REDIRECT_URI?"*"error=invalid_request"* ]] || die "expected invalid_request redirect, got $loc"
ok "$loc"

# ---------------------------------------------------------------------------------------
step "authorization request (state, nonce, PKCE S256)"
STATE=$(openssl rand -hex 16); NONCE=$(openssl rand -hex 16)
VERIFIER=$(openssl rand 48 | b64url)                      # 64 chars of [A-Za-z0-9_-]
CHALLENGE=$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | b64url)
s=$(req "$WORK/auth" -G "$AUTHZ" \
  --data-urlencode client_id=$CLIENT_ID --data-urlencode response_type=code \
  --data-urlencode "scope=openid profile email offline_access" --data-urlencode redirect_uri=$REDIRECT_URI \
  --data-urlencode state="$STATE" --data-urlencode nonce="$NONCE" \
  --data-urlencode code_challenge="$CHALLENGE" --data-urlencode code_challenge_method=S256)
expect_status "$s" 303 "$WORK/auth"
loc=$(header "$WORK/auth" location)
[[ "$loc" =~ ^/interaction/[A-Za-z0-9_-]+$ ]] || die "unexpected Location $loc"
grep -q $'\t_interaction\t' "$JAR" && grep -q $'\t_interaction_resume\t' "$JAR" || die "interaction cookies not set"
ok "303 -> $loc (cookies _interaction, _interaction_resume + .sig set)"

# ---------------------------------------------------------------------------------------
step "login page"
INTERACTION=$(absolute "$loc")
s=$(req "$WORK/login" "$INTERACTION"); expect_status "$s" 200 "$WORK/login"
grep -q 'name="prompt" value="login"' "$WORK/login.b" || die "not a login page"
ACTION=$(sed -n 's/.*<form[^>]*action="\([^"]*\)".*/\1/p' "$WORK/login.b" | head -n1)
[[ "$ACTION" == "$INTERACTION" ]] || die "login form action $ACTION != $INTERACTION"
ok "form POST $ACTION fields prompt=login, login, password"

step "submit login as '$LOGIN' (any password)"
s=$(req "$WORK/login-post" "$ACTION" --data-urlencode prompt=login --data-urlencode login=$LOGIN --data-urlencode password=whatever)
expect_status "$s" 303 "$WORK/login-post"
loc=$(header "$WORK/login-post" location)
[[ "$loc" == "$ISSUER/auth/"* ]] || die "unexpected Location $loc"
ok "303 -> $loc"

step "resume authorization after login"
s=$(req "$WORK/resume1" "$loc"); expect_status "$s" 303 "$WORK/resume1"
loc=$(header "$WORK/resume1" location)
[[ "$loc" =~ ^/interaction/[A-Za-z0-9_-]+$ ]] || die "unexpected Location $loc"
grep -q $'\t_session\t' "$JAR" || die "_session cookie not set"
ok "303 -> $loc (_session cookie set)"

# ---------------------------------------------------------------------------------------
step "consent page"
INTERACTION=$(absolute "$loc")
s=$(req "$WORK/consent" "$INTERACTION"); expect_status "$s" 200 "$WORK/consent"
grep -q 'name="prompt" value="consent"' "$WORK/consent.b" || die "not a consent page"
ACTION=$(sed -n 's/.*<form[^>]*action="\([^"]*\)".*/\1/p' "$WORK/consent.b" | head -n1)
[[ "$ACTION" == "$INTERACTION" ]] || die "consent form action $ACTION != $INTERACTION"
ok "form POST $ACTION field prompt=consent"

step "submit consent"
s=$(req "$WORK/consent-post" "$ACTION" --data-urlencode prompt=consent)
expect_status "$s" 303 "$WORK/consent-post"
loc=$(header "$WORK/consent-post" location)
[[ "$loc" == "$ISSUER/auth/"* ]] || die "unexpected Location $loc"
ok "303 -> $loc"

step "resume authorization after consent -> redirect_uri with code"
s=$(req "$WORK/resume2" "$loc"); expect_status "$s" 303 "$WORK/resume2"
CALLBACK=$(header "$WORK/resume2" location)
[[ "$CALLBACK" == "$REDIRECT_URI?"* ]] || die "unexpected Location $CALLBACK"
read -r CODE GOT_STATE GOT_ISS < <(node -e '
  const u = new URL(process.argv[1]);
  console.log([u.searchParams.get("code"), u.searchParams.get("state"), u.searchParams.get("iss")].join(" "));
' "$CALLBACK")
[[ -n "$CODE" && "$CODE" != null ]] || die "no code in $CALLBACK"
[[ "$GOT_STATE" == "$STATE" ]] || die "state mismatch: $GOT_STATE"
[[ "$GOT_ISS" == "$ISSUER" ]] || die "iss mismatch: $GOT_ISS"
ok "$CALLBACK"

# ---------------------------------------------------------------------------------------
step "token request (authorization_code, client_secret_basic, code_verifier)"
s=$(req "$WORK/tok1" -u "$CLIENT_ID:$CLIENT_SECRET" "$TOKEN" \
  --data-urlencode grant_type=authorization_code --data-urlencode code="$CODE" \
  --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode code_verifier="$VERIFIER")
expect_status "$s" 200 "$WORK/tok1"
AT1=$(jget access_token <"$WORK/tok1.b"); RT1=$(jget refresh_token <"$WORK/tok1.b"); IDT=$(jget id_token <"$WORK/tok1.b")
[[ -n "$AT1" ]] || die "no access_token"; [[ -n "$RT1" ]] || die "no refresh_token"; [[ -n "$IDT" ]] || die "no id_token"
[[ "$(jget token_type <"$WORK/tok1.b")" == Bearer ]] || die "token_type not Bearer"
ok "access_token, refresh_token, id_token present; expires_in=$(jget expires_in <"$WORK/tok1.b") scope='$(jget scope <"$WORK/tok1.b")'"

step "verify the ID token (RS256 signature against jwks_uri, iss, aud, nonce, sub)"
s=$(req "$WORK/jwks" "$JWKS"); expect_status "$s" 200 "$WORK/jwks"
node -e '
  const crypto = require("crypto"); const fs = require("fs");
  const [idt, iss, aud, nonce, sub, jwksFile] = process.argv.slice(1);
  const [h, p, sig] = idt.split(".");
  const header = JSON.parse(Buffer.from(h, "base64url")); const payload = JSON.parse(Buffer.from(p, "base64url"));
  const jwk = JSON.parse(fs.readFileSync(jwksFile, "utf8")).keys.find((k) => k.kid === header.kid);
  if (header.alg !== "RS256" || !jwk) throw new Error("unexpected header " + JSON.stringify(header));
  const key = crypto.createPublicKey({ key: jwk, format: "jwk" });
  if (!crypto.verify("RSA-SHA256", Buffer.from(h + "." + p), key, Buffer.from(sig, "base64url"))) throw new Error("bad signature");
  const now = Math.floor(Date.now() / 1000);
  const want = { iss, aud, nonce, sub };
  for (const [k, v] of Object.entries(want)) if (payload[k] !== v) throw new Error(k + "=" + payload[k] + " want " + v);
  if (!(payload.exp > now && payload.iat <= now + 5)) throw new Error("bad exp/iat");
  console.log("     header  " + JSON.stringify(header));
  console.log("     payload " + JSON.stringify(payload));
' "$IDT" "$ISSUER" "$CLIENT_ID" "$NONCE" "$LOGIN" "$WORK/jwks.b" || die "ID token verification failed"
ok "ID token valid"

# ---------------------------------------------------------------------------------------
step "userinfo with the access token"
s=$(req "$WORK/ui1" -H "Authorization: Bearer $AT1" "$USERINFO"); expect_status "$s" 200 "$WORK/ui1"
[[ "$(jget sub <"$WORK/ui1.b")" == "$LOGIN" ]] || die "userinfo sub mismatch"
[[ "$(jget email <"$WORK/ui1.b")" == "$LOGIN@example.test" ]] || die "userinfo email mismatch"
ok "$(cat "$WORK/ui1.b")"

# ---------------------------------------------------------------------------------------
step "refresh grant"
s=$(req "$WORK/tok2" -u "$CLIENT_ID:$CLIENT_SECRET" "$TOKEN" \
  --data-urlencode grant_type=refresh_token --data-urlencode refresh_token="$RT1")
expect_status "$s" 200 "$WORK/tok2"
AT2=$(jget access_token <"$WORK/tok2.b"); RT2=$(jget refresh_token <"$WORK/tok2.b")
[[ -n "$AT2" && "$AT2" != "$AT1" ]] || die "refresh did not return a new access token"
[[ -n "$(jget id_token <"$WORK/tok2.b")" ]] || die "refresh returned no id_token"
if [[ "$RT2" == "$RT1" ]]; then ok "new access token; same refresh token returned (rotation off)"; else ok "new access token; rotated refresh token"; fi
s=$(req "$WORK/ui2" -H "Authorization: Bearer $AT2" "$USERINFO"); expect_status "$s" 200 "$WORK/ui2"
ok "new access token accepted by userinfo"

# ---------------------------------------------------------------------------------------
step "revoke the refresh token"
s=$(req "$WORK/rev" -u "$CLIENT_ID:$CLIENT_SECRET" "$REVOKE" \
  --data-urlencode token="$RT2" --data-urlencode token_type_hint=refresh_token)
expect_status "$s" 200 "$WORK/rev"
ok "200, body '$(cat "$WORK/rev.b")'"

step "refresh with the revoked token fails with invalid_grant"
s=$(req "$WORK/tok3" -u "$CLIENT_ID:$CLIENT_SECRET" "$TOKEN" \
  --data-urlencode grant_type=refresh_token --data-urlencode refresh_token="$RT2")
expect_status "$s" 400 "$WORK/tok3"
[[ "$(jget error <"$WORK/tok3.b")" == invalid_grant ]] || die "expected invalid_grant, got $(cat "$WORK/tok3.b")"
ok "400 $(cat "$WORK/tok3.b")"

step "access tokens of the revoked grant are dead too"
s=$(req "$WORK/ui3" -H "Authorization: Bearer $AT2" "$USERINFO"); expect_status "$s" 401 "$WORK/ui3"
ok "userinfo 401 $(cat "$WORK/ui3.b")"

# ---------------------------------------------------------------------------------------
# prompt_for_new_authorization NAME -> prints the prompt (login|consent) of a fresh /auth
prompt_for_new_authorization() {
  local s loc v c
  v=$(openssl rand 48 | b64url); c=$(printf '%s' "$v" | openssl dgst -sha256 -binary | b64url)
  s=$(req "$WORK/$1" -G "$AUTHZ" --data-urlencode client_id=$CLIENT_ID --data-urlencode response_type=code \
    --data-urlencode "scope=openid profile email" --data-urlencode redirect_uri=$REDIRECT_URI \
    --data-urlencode state=s --data-urlencode code_challenge="$c" --data-urlencode code_challenge_method=S256)
  expect_status "$s" 303 "$WORK/$1"
  loc=$(header "$WORK/$1" location)
  [[ "$loc" =~ ^/interaction/ ]] || die "expected an interaction, got Location $loc"
  s=$(req "$WORK/$1-page" "$(absolute "$loc")"); expect_status "$s" 200 "$WORK/$1-page"
  sed -n 's/.*name="prompt" value="\([a-z]*\)".*/\1/p' "$WORK/$1-page.b" | head -n1
}

step "with the _session cookie, a new authorization skips login (the revoked grant needs consent again)"
p=$(prompt_for_new_authorization auth2)
[[ "$p" == consent ]] || die "expected the consent prompt, got '$p'"
ok "prompt=$p"

# ---------------------------------------------------------------------------------------
step "RP-initiated logout: end_session shows a confirmation form"
LOGOUT_STATE=$(openssl rand -hex 8)
s=$(req "$WORK/logout" -G "$END_SESSION" --data-urlencode id_token_hint="$IDT" \
  --data-urlencode post_logout_redirect_uri=$REDIRECT_URI --data-urlencode state="$LOGOUT_STATE")
expect_status "$s" 200 "$WORK/logout"
LACTION=$(sed -n 's/.*<form id="op.logoutForm" method="post" action="\([^"]*\)".*/\1/p' "$WORK/logout.b" | head -n1)
XSRF=$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' "$WORK/logout.b" | head -n1)
[[ "$LACTION" == "$ISSUER/session/end/confirm" && -n "$XSRF" ]] || die "no logout form (action=$LACTION xsrf=$XSRF)"
ok "form POST $LACTION fields xsrf=<hidden>, logout=yes"

step "confirm logout -> post_logout_redirect_uri with state, _session cleared"
s=$(req "$WORK/logout-post" "$LACTION" --data-urlencode xsrf="$XSRF" --data-urlencode logout=yes)
expect_status "$s" 303 "$WORK/logout-post"
loc=$(header "$WORK/logout-post" location)
[[ "$loc" == "$REDIRECT_URI?state=$LOGOUT_STATE" ]] || die "unexpected Location $loc"
grep -qi '^set-cookie: _session=;.*expires=Thu, 01 Jan 1970' "$WORK/logout-post.h" || die "_session cookie not cleared"
ok "303 -> $loc; Set-Cookie _session= (expired)"

step "the provider session is gone: a new authorization asks for login again"
# (curl 7.88's jar keeps the persisted _session cookie despite the 1970 expiry, so this also
#  proves the session is destroyed server-side, not just forgotten by the client)
p=$(prompt_for_new_authorization auth3)
[[ "$p" == login ]] || die "expected the login prompt, got '$p'"
ok "prompt=$p"

# ---------------------------------------------------------------------------------------
step "test counters"
s=$(req "$WORK/stats" "$ISSUER/test/stats"); expect_status "$s" 200 "$WORK/stats"
ok "$(cat "$WORK/stats.b")"
[[ "$(jget authorization_code_grants <"$WORK/stats.b")" == 1 ]] || die "authorization_code_grants != 1"
[[ "$(jget refresh_grants <"$WORK/stats.b")" == 1 ]] || die "refresh_grants != 1"
[[ "$(jget revocations <"$WORK/stats.b")" == 1 ]] || die "revocations != 1"
[[ "$(jget end_sessions <"$WORK/stats.b")" == 1 ]] || die "end_sessions != 1"

# ---------------------------------------------------------------------------------------
step "closing the provider's stdin makes it exit by itself"
exec {STDIN_FD}>&-; STDIN_FD=""
for _ in $(seq 1 50); do kill -0 "$PROVIDER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PROVIDER_PID" 2>/dev/null && die "provider still running 5 s after stdin was closed"
set +e; wait "$PROVIDER_PID"; prc=$?; set -e
PROVIDER_PID=""
[[ $prc -eq 0 ]] || die "provider exit status $prc"
[[ "$(wc -l <"$WORK/provider.stdout")" -eq 1 ]] || die "provider wrote more than one line to stdout"
ok "exited with status 0; stdout had exactly one line; last stderr line: $(tail -n1 "$WORK/provider.stderr")"

END_NS=$(date +%s%N)
printf '\nALL %d STEPS PASSED in %d ms\n' "$STEP" $(((END_NS - START_NS) / 1000000))
