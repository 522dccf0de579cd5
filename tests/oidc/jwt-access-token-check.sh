#!/usr/bin/env bash
# End-to-end proof of the OIDC_CONFIG options `jwtAccessTokens` and `tokenEndpointDelayMs` and of
# the test route POST /test/fail-token-endpoint of provider.mjs (see README.md):
#
#   provider A  {"jwtAccessTokens":{"audience":"https://api.example.test"},
#                "rotateRefreshToken":true,"accessTokenTtl":120}
#     login with curl (code + PKCE, no `resource` parameter anywhere), then: the access token is
#     an RS256 JWT (typ at+jwt, kid in /jwks, signature verified with node crypto AND openssl),
#     iss/aud/sub/client_id/scope/exp/iat/jti right; ID token and refresh token as before
#     (at_hash matches the JWT); userinfo refuses the JWT; refresh (rotating) returns JWTs for
#     the same audience (also with an explicit resource=<audience>); fail-token-endpoint answers
#     503 twice unprocessed, `count: 0` disarms; reuse of a rotated refresh token still fails and
#     revokes the grant; an unknown `resource` is invalid_target (and, a quirk of oidc-provider
#     with rotation, consumes the refresh token anyway); counters.
#   provider B  {"jwtAccessTokens":{"audience":"https://api.example.test"},"tokenEndpointDelayMs":600}
#     token requests take >= 600 ms (other endpoints don't), 5 concurrent refreshes overlap
#     (~600 ms in total, not 3 s), injected failures are delayed too and hit exactly `count` of
#     the concurrent requests.
#   bad values for the new options are refused with exit status 2.
#
# Usage: bash tests/oidc/jwt-access-token-check.sh   (needs node >= 18, curl, openssl)
# Exits 0 only if every step passed. Every curl call has a timeout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
START_NS=$(date +%s%N)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oidc-jwt.XXXXXX")
JAR="$WORK/cookies-a.txt"
PROVIDER_PID=""
STDIN_FD=""
STEP=0

CLIENT_ID=spa-client
CLIENT_SECRET=spa-secret
REDIRECT_URI=https://www.example.test/
LOGIN=alice
AUDIENCE=https://api.example.test
AT_TTL=120
DELAY_MS=600

curl_() { curl -sS --connect-timeout 5 --max-time 15 --cookie "$JAR" --cookie-jar "$JAR" "$@"; }

stop_provider() {
  if [[ -n "${STDIN_FD:-}" ]]; then exec {STDIN_FD}>&- || true; STDIN_FD=""; fi
  if [[ -n "$PROVIDER_PID" ]] && kill -0 "$PROVIDER_PID" 2>/dev/null; then
    kill -TERM "$PROVIDER_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$PROVIDER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PROVIDER_PID" 2>/dev/null || true
  fi
  if [[ -n "$PROVIDER_PID" ]]; then wait "$PROVIDER_PID" 2>/dev/null || true; fi
  PROVIDER_PID=""
}
cleanup() {
  local rc=$?
  stop_provider
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
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# jget KEY < json  -> the value (objects/arrays as JSON, missing as empty string)
jget() {
  node -e '
    const o = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const v = process.argv[1].split(".").reduce((a, k) => (a == null ? undefined : a[k]), o);
    process.stdout.write(v === undefined || v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
  ' "$1"
}
# req OUT_PREFIX CURL_ARGS... -> prints the HTTP status; headers in OUT.h, body in OUT.b
req() { local out=$1; shift; curl_ -D "$out.h" -o "$out.b" -w '%{http_code}' "$@"; }
header() { grep -i "^$2:" "$1.h" | head -n1 | cut -d' ' -f2- | tr -d '\r'; }
absolute() { case "$1" in http://*|https://*) printf '%s' "$1" ;; /*) printf '%s%s' "$ISSUER" "$1" ;; *) die "unexpected Location $1" ;; esac; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
expect_status() { [[ "$1" == "$2" ]] || { echo "     response headers:"; cat "$3.h" 2>/dev/null || true; echo "     body: $(head -c 600 "$3.b" 2>/dev/null)"; die "expected HTTP $2, got $1"; }; }

# start_provider OIDC_CONFIG_JSON -> sets PROVIDER_PID, STDIN_FD, ISSUER (+ endpoints from discovery)
start_provider() {
  rm -f "$WORK/stdin" "$WORK/provider.stdout" "$WORK/provider.stderr"
  mkfifo "$WORK/stdin"
  PORT= OIDC_CONFIG="$1" MAX_LIFETIME_SECONDS=120 node "$HERE/provider.mjs" <"$WORK/stdin" >"$WORK/provider.stdout" 2>"$WORK/provider.stderr" &
  PROVIDER_PID=$!
  exec {STDIN_FD}>"$WORK/stdin"
  for _ in $(seq 1 200); do
    if [[ -s "$WORK/provider.stdout" ]] && [[ "$(tail -c1 "$WORK/provider.stdout" | od -An -c | tr -d ' ')" == '\n' ]]; then break; fi
    kill -0 "$PROVIDER_PID" 2>/dev/null || die "provider exited before printing its issuer"
    sleep 0.1
  done
  [[ -s "$WORK/provider.stdout" ]] || die "provider printed no issuer within 20 s"
  ISSUER=$(head -n1 "$WORK/provider.stdout" | jget issuer)
  [[ "$ISSUER" =~ ^http://127\.0\.0\.1:[0-9]+$ ]] || die "bad issuer line: $(head -n1 "$WORK/provider.stdout")"
  local s
  s=$(req "$WORK/disco" "$ISSUER/.well-known/openid-configuration"); expect_status "$s" 200 "$WORK/disco"
  AUTHZ=$(jget authorization_endpoint <"$WORK/disco.b"); TOKEN=$(jget token_endpoint <"$WORK/disco.b")
  USERINFO=$(jget userinfo_endpoint <"$WORK/disco.b"); JWKS=$(jget jwks_uri <"$WORK/disco.b")
  INTROSPECT=$(jget introspection_endpoint <"$WORK/disco.b")
  s=$(req "$WORK/jwks" "$JWKS"); expect_status "$s" 200 "$WORK/jwks"
}

# login -> sets CODE, VERIFIER, NONCE: the full devInteractions login + consent, no `resource` param
login() {
  local s loc action state
  state=$(openssl rand -hex 16); NONCE=$(openssl rand -hex 16)
  VERIFIER=$(openssl rand 48 | b64url)
  local challenge; challenge=$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | b64url)
  s=$(req "$WORK/auth" -G "$AUTHZ" \
    --data-urlencode client_id=$CLIENT_ID --data-urlencode response_type=code \
    --data-urlencode "scope=openid profile email offline_access" --data-urlencode redirect_uri=$REDIRECT_URI \
    --data-urlencode state="$state" --data-urlencode nonce="$NONCE" \
    --data-urlencode code_challenge="$challenge" --data-urlencode code_challenge_method=S256)
  expect_status "$s" 303 "$WORK/auth"; loc=$(header "$WORK/auth" location)
  s=$(req "$WORK/login" "$(absolute "$loc")"); expect_status "$s" 200 "$WORK/login"
  grep -q 'name="prompt" value="login"' "$WORK/login.b" || die "not a login page"
  action=$(sed -n 's/.*<form[^>]*action="\([^"]*\)".*/\1/p' "$WORK/login.b" | head -n1)
  s=$(req "$WORK/login-post" "$action" --data-urlencode prompt=login --data-urlencode login=$LOGIN)
  expect_status "$s" 303 "$WORK/login-post"; loc=$(header "$WORK/login-post" location)
  s=$(req "$WORK/resume1" "$loc"); expect_status "$s" 303 "$WORK/resume1"; loc=$(header "$WORK/resume1" location)
  s=$(req "$WORK/consent" "$(absolute "$loc")"); expect_status "$s" 200 "$WORK/consent"
  grep -q 'name="prompt" value="consent"' "$WORK/consent.b" || die "not a consent page"
  action=$(sed -n 's/.*<form[^>]*action="\([^"]*\)".*/\1/p' "$WORK/consent.b" | head -n1)
  s=$(req "$WORK/consent-post" "$action" --data-urlencode prompt=consent)
  expect_status "$s" 303 "$WORK/consent-post"; loc=$(header "$WORK/consent-post" location)
  s=$(req "$WORK/resume2" "$loc"); expect_status "$s" 303 "$WORK/resume2"; loc=$(header "$WORK/resume2" location)
  [[ "$loc" == "$REDIRECT_URI?"* ]] || die "unexpected Location $loc"
  CODE=$(node -e 'console.log(new URL(process.argv[1]).searchParams.get("code") || "")' "$loc")
  [[ -n "$CODE" ]] || die "no code in $loc"
  [[ "$loc" == *"state=$state"* ]] || die "state mismatch in $loc"
}

token_code() {   # token_code OUT
  req "$1" -u "$CLIENT_ID:$CLIENT_SECRET" "$TOKEN" --data-urlencode grant_type=authorization_code \
    --data-urlencode code="$CODE" --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode code_verifier="$VERIFIER"
}
token_refresh() {   # token_refresh OUT REFRESH_TOKEN [extra curl args]
  local out=$1 rt=$2; shift 2
  req "$out" -u "$CLIENT_ID:$CLIENT_SECRET" "$TOKEN" --data-urlencode grant_type=refresh_token --data-urlencode refresh_token="$rt" "$@"
}

# check_jwt_at ACCESS_TOKEN [ID_TOKEN] -> verifies the JWT access token (node crypto), prints header + payload
check_jwt_at() {
  node -e '
    const crypto = require("crypto"); const fs = require("fs");
    const [at, iss, aud, sub, clientId, ttl, jwksFile, scope, idt] = process.argv.slice(1);
    const parts = at.split(".");
    if (parts.length !== 3) throw new Error("access token is not a 3-part JWS: " + at);
    const [h, p, sig] = parts;
    const header = JSON.parse(Buffer.from(h, "base64url")); const payload = JSON.parse(Buffer.from(p, "base64url"));
    const jwks = JSON.parse(fs.readFileSync(jwksFile, "utf8")).keys;
    const jwk = jwks.find((k) => k.kid === header.kid);
    if (header.alg !== "RS256" || header.typ !== "at+jwt" || !header.kid || !jwk) throw new Error("unexpected header " + JSON.stringify(header) + " jwks kids " + jwks.map((k) => k.kid));
    const key = crypto.createPublicKey({ key: jwk, format: "jwk" });
    if (!crypto.verify("RSA-SHA256", Buffer.from(h + "." + p), key, Buffer.from(sig, "base64url"))) throw new Error("bad signature");
    const want = { iss, aud, sub, client_id: clientId, scope };
    for (const [k, v] of Object.entries(want)) if (payload[k] !== v) throw new Error(k + "=" + JSON.stringify(payload[k]) + " want " + v);
    const now = Math.floor(Date.now() / 1000);
    if (!(Number.isInteger(payload.iat) && Math.abs(payload.iat - now) <= 5)) throw new Error("bad iat " + payload.iat);
    if (payload.exp - payload.iat !== Number(ttl)) throw new Error("exp - iat = " + (payload.exp - payload.iat) + " want " + ttl);
    if (typeof payload.jti !== "string" || payload.jti.length < 16) throw new Error("bad jti");
    const expected = ["aud", "client_id", "exp", "iat", "iss", "jti", "scope", "sub"];
    if (JSON.stringify(Object.keys(payload).sort()) !== JSON.stringify(expected)) throw new Error("unexpected claim set " + Object.keys(payload));
    if (idt) {   // the ID token of the same response: at_hash must match this JWT access token
      const ip = JSON.parse(Buffer.from(idt.split(".")[1], "base64url"));
      const d = crypto.createHash("sha256").update(at).digest();
      const atHash = d.subarray(0, 16).toString("base64url");
      if (ip.at_hash !== atHash) throw new Error("id_token at_hash " + ip.at_hash + " != " + atHash);
    }
    console.log("     header  " + JSON.stringify(header));
    console.log("     payload " + JSON.stringify(payload));
  ' "$1" "$ISSUER" "$AUDIENCE" "$LOGIN" "$CLIENT_ID" "$AT_TTL_EXPECTED" "$WORK/jwks.b" "$SCOPE_EXPECTED" "${2:-}"
}

# check_jwt_openssl ACCESS_TOKEN -> verifies the RS256 signature with `openssl dgst -verify`
check_jwt_openssl() {
  local at=$1
  node -e '
    const crypto = require("crypto"); const fs = require("fs");
    const [at, jwksFile, out] = process.argv.slice(1);
    const [h, p, s] = at.split(".");
    const kid = JSON.parse(Buffer.from(h, "base64url")).kid;
    const jwk = JSON.parse(fs.readFileSync(jwksFile, "utf8")).keys.find((k) => k.kid === kid);
    fs.writeFileSync(out + ".pem", crypto.createPublicKey({ key: jwk, format: "jwk" }).export({ type: "spki", format: "pem" }));
    fs.writeFileSync(out + ".data", h + "." + p);
    fs.writeFileSync(out + ".sig", Buffer.from(s, "base64url"));
  ' "$at" "$WORK/jwks.b" "$WORK/ossl"
  openssl dgst -sha256 -verify "$WORK/ossl.pem" -signature "$WORK/ossl.sig" "$WORK/ossl.data" >"$WORK/ossl.out" 2>&1 \
    || die "openssl: $(cat "$WORK/ossl.out")"
  grep -q 'Verified OK' "$WORK/ossl.out" || die "openssl: $(cat "$WORK/ossl.out")"
  # and a tampered payload must fail
  printf 'x' >>"$WORK/ossl.data"
  if openssl dgst -sha256 -verify "$WORK/ossl.pem" -signature "$WORK/ossl.sig" "$WORK/ossl.data" >/dev/null 2>&1; then
    die "openssl verified a tampered token"
  fi
}

check_id_token() {   # check_id_token ID_TOKEN -> RS256 valid, aud=client, nonce, sub
  node -e '
    const crypto = require("crypto"); const fs = require("fs");
    const [idt, iss, aud, nonce, sub, jwksFile] = process.argv.slice(1);
    const [h, p, sig] = idt.split(".");
    const header = JSON.parse(Buffer.from(h, "base64url")); const payload = JSON.parse(Buffer.from(p, "base64url"));
    const jwk = JSON.parse(fs.readFileSync(jwksFile, "utf8")).keys.find((k) => k.kid === header.kid);
    if (header.alg !== "RS256" || header.typ !== "JWT" || !jwk) throw new Error("unexpected header " + JSON.stringify(header));
    if (!crypto.verify("RSA-SHA256", Buffer.from(h + "." + p), crypto.createPublicKey({ key: jwk, format: "jwk" }), Buffer.from(sig, "base64url"))) throw new Error("bad signature");
    for (const [k, v] of Object.entries({ iss, aud, nonce, sub })) if (payload[k] !== v) throw new Error(k + "=" + payload[k] + " want " + v);
    for (const k of ["name", "email", "at_hash"]) if (!(k in payload)) throw new Error("ID token lacks " + k);
    console.log("     id_token payload " + JSON.stringify(payload));
  ' "$1" "$ISSUER" "$CLIENT_ID" "$NONCE" "$LOGIN" "$WORK/jwks.b"
}

stat_of() { curl_ -s "$ISSUER/test/stats" | jget "$1"; }
fail_token_endpoint() { curl_ -s -o "$WORK/fte.b" -w '%{http_code}' -H 'content-type: application/json' -X POST --data "$1" "$ISSUER/test/fail-token-endpoint"; }

# ---------------------------------------------------------------------------------------
step "install dependencies (npm ci) if needed"
if [[ ! -d "$HERE/node_modules/oidc-provider" ]]; then
  timeout 300 npm ci --prefix "$HERE" --no-audit --no-fund >&2
fi
ok "oidc-provider $(node -p "require('$HERE/node_modules/oidc-provider/package.json').version")"

# =======================================================================================
CONFIG_A="{\"jwtAccessTokens\":{\"audience\":\"$AUDIENCE\"},\"rotateRefreshToken\":true,\"accessTokenTtl\":$AT_TTL}"
step "provider A: OIDC_CONFIG=$CONFIG_A"
start_provider "$CONFIG_A"
A_KID=$(jget keys.0.kid <"$WORK/jwks.b")
ok "pid $PROVIDER_PID, issuer $ISSUER, jwks kid $A_KID"
AT_TTL_EXPECTED=$AT_TTL
SCOPE_EXPECTED="openid profile email"

step "login (authorization code + PKCE; no resource parameter anywhere)"
login
ok "code ${CODE:0:12}..."

step "token request -> JWT access token, ID token and refresh token"
s=$(token_code "$WORK/tok1"); expect_status "$s" 200 "$WORK/tok1"
AT1=$(jget access_token <"$WORK/tok1.b"); RT1=$(jget refresh_token <"$WORK/tok1.b"); IDT1=$(jget id_token <"$WORK/tok1.b")
[[ -n "$AT1" && -n "$RT1" && -n "$IDT1" ]] || die "missing token(s): $(cat "$WORK/tok1.b")"
[[ "$(jget token_type <"$WORK/tok1.b")" == Bearer ]] || die "token_type not Bearer"
[[ "$(jget expires_in <"$WORK/tok1.b")" == "$AT_TTL" ]] || die "expires_in != $AT_TTL"
[[ "$(jget scope <"$WORK/tok1.b")" == "$SCOPE_EXPECTED" ]] || die "scope '$(jget scope <"$WORK/tok1.b")' != '$SCOPE_EXPECTED'"
[[ "$RT1" != *.* ]] || die "refresh token is not opaque: $RT1"
ok "response keys $(node -e 'console.log(Object.keys(JSON.parse(require("fs").readFileSync(0,"utf8"))).join(","))' <"$WORK/tok1.b"); expires_in=$AT_TTL scope='$SCOPE_EXPECTED'; refresh token opaque (${#RT1} chars)"

step "the access token is an RS256 JWT for $AUDIENCE (node crypto against /jwks; at_hash of the ID token matches)"
check_jwt_at "$AT1" "$IDT1" || die "JWT access token check failed"
ok "JWT access token valid"

step "its signature also verifies with openssl (public key from the JWK); a tampered payload does not"
check_jwt_openssl "$AT1"
ok "openssl: Verified OK"

step "the ID token is issued as before (RS256, aud=$CLIENT_ID, nonce, profile/email claims)"
check_id_token "$IDT1" || die "ID token check failed"
ok "ID token valid"

step "userinfo refuses the JWT access token (its audience is the API)"
s=$(req "$WORK/ui" -H "Authorization: Bearer $AT1" "$USERINFO"); expect_status "$s" 401 "$WORK/ui"
ok "401 $(cat "$WORK/ui.b")"

step "introspection of the JWT access token (not stored by oidc-provider: self-contained)"
s=$(req "$WORK/intro" -u "$CLIENT_ID:$CLIENT_SECRET" "$INTROSPECT" --data-urlencode token="$AT1"); expect_status "$s" 200 "$WORK/intro"
ok "200 $(cat "$WORK/intro.b")"

step "refresh (rotation on) -> new JWT access token for the same audience, new refresh token, new ID token"
s=$(token_refresh "$WORK/tok2" "$RT1"); expect_status "$s" 200 "$WORK/tok2"
AT2=$(jget access_token <"$WORK/tok2.b"); RT2=$(jget refresh_token <"$WORK/tok2.b"); IDT2=$(jget id_token <"$WORK/tok2.b")
[[ -n "$AT2" && "$AT2" != "$AT1" ]] || die "no new access token"
[[ -n "$RT2" && "$RT2" != "$RT1" ]] || die "refresh token not rotated"
[[ -n "$IDT2" ]] || die "no id_token on refresh"
[[ "$(jget scope <"$WORK/tok2.b")" == "$SCOPE_EXPECTED" && "$(jget expires_in <"$WORK/tok2.b")" == "$AT_TTL" ]] || die "refresh response: $(cat "$WORK/tok2.b")"
check_jwt_at "$AT2" "$IDT2" || die "refreshed JWT access token check failed"
check_id_token "$IDT2" || die "refreshed ID token check failed"
ok "new JWT access token, rotated refresh token, ID token with the original nonce"

step "second refresh with the rotated token; explicit resource=$AUDIENCE is accepted too"
s=$(token_refresh "$WORK/tok3" "$RT2" --data-urlencode resource="$AUDIENCE"); expect_status "$s" 200 "$WORK/tok3"
AT3=$(jget access_token <"$WORK/tok3.b"); RT3=$(jget refresh_token <"$WORK/tok3.b")
check_jwt_at "$AT3" "$(jget id_token <"$WORK/tok3.b")" >/dev/null || die "third JWT access token check failed"
ok "200, JWT for $AUDIENCE"

step "POST /test/fail-token-endpoint {\"status\":503,\"count\":2}: the next two token requests fail unprocessed"
GE_BEFORE=$(stat_of grant_errors); RG_BEFORE=$(stat_of refresh_grants)
s=$(fail_token_endpoint '{"status":503,"count":2}'); [[ "$s" == 200 ]] || die "fail-token-endpoint answered $s $(cat "$WORK/fte.b")"
for i in 1 2; do
  s=$(token_refresh "$WORK/inj$i" "$RT3"); expect_status "$s" 503 "$WORK/inj$i"
  [[ "$(cat "$WORK/inj$i.b")" == '{"error":"temporarily_unavailable"}' ]] || die "body $(cat "$WORK/inj$i.b")"
  [[ "$(header "$WORK/inj$i" content-type)" == application/json* ]] || die "content-type $(header "$WORK/inj$i" content-type)"
done
# RT3 was not consumed by the failed requests: with rotation a consumed token would now be invalid_grant
s=$(token_refresh "$WORK/tok5" "$RT3"); expect_status "$s" 200 "$WORK/tok5"
RT5=$(jget refresh_token <"$WORK/tok5.b")
[[ "$(stat_of injected_failures)" == 2 ]] || die "injected_failures != 2"
[[ "$(stat_of grant_errors)" == "$GE_BEFORE" ]] || die "grant_errors changed by injected failures"
[[ "$(stat_of refresh_grants)" == $((RG_BEFORE + 1)) ]] || die "refresh_grants not +1"
ok "503 $(cat "$WORK/inj1.b") twice, then 200 with the same (unconsumed) refresh token"

step "count 0 disarms; bad bodies are refused"
s=$(fail_token_endpoint '{"status":500,"count":5}'); [[ "$s" == 200 ]] || die "arm: $s"
s=$(fail_token_endpoint '{"count":0}'); [[ "$s" == 200 ]] || die "disarm: $s $(cat "$WORK/fte.b")"
s=$(token_refresh "$WORK/tok6" "$RT5"); expect_status "$s" 200 "$WORK/tok6"
RT6=$(jget refresh_token <"$WORK/tok6.b")
for bad in '{"status":503}' '{"status":200,"count":1}' '{"count":-1}' '{"count":1,"x":1}' 'nope'; do
  s=$(fail_token_endpoint "$bad"); [[ "$s" == 400 ]] || die "body $bad answered $s"
done
[[ "$(stat_of injected_failures)" == 2 ]] || die "injected_failures != 2 after disarm"
ok "after count 0 the token endpoint works; 5 bad bodies -> 400 ($(cat "$WORK/fte.b"))"

step "rotation still detects reuse: the already used refresh token -> invalid_grant and the grant is revoked"
s=$(token_refresh "$WORK/reuse" "$RT1"); expect_status "$s" 400 "$WORK/reuse"
[[ "$(jget error <"$WORK/reuse.b")" == invalid_grant ]] || die "expected invalid_grant: $(cat "$WORK/reuse.b")"
s=$(token_refresh "$WORK/after-reuse" "$RT6"); expect_status "$s" 400 "$WORK/after-reuse"
ok "reuse -> 400 $(cat "$WORK/reuse.b"); newest refresh token -> 400 too"

step "oidc-provider quirk with rotation: a refresh refused for an unknown resource still consumes the refresh token"
JAR="$WORK/cookies-a2.txt"   # fresh browser: full login again (the old grant is revoked)
login
s=$(token_code "$WORK/tok7"); expect_status "$s" 200 "$WORK/tok7"
RT7=$(jget refresh_token <"$WORK/tok7.b")
s=$(token_refresh "$WORK/tok8" "$RT7" --data-urlencode resource=https://other.example.test); expect_status "$s" 400 "$WORK/tok8"
[[ "$(jget error <"$WORK/tok8.b")" == invalid_target ]] || die "expected invalid_target: $(cat "$WORK/tok8.b")"
s=$(token_refresh "$WORK/tok9" "$RT7"); expect_status "$s" 400 "$WORK/tok9"
grep -q 'refresh token already used' "$WORK/provider.stderr" || die "expected 'refresh token already used' in stderr"
ok "resource=https://other.example.test -> 400 $(cat "$WORK/tok8.b"); the same refresh token afterwards -> 400 invalid_grant [refresh token already used]"

step "counters"
STATS_A=$(curl_ -s "$ISSUER/test/stats")
ok "$STATS_A"
[[ "$(jget authorization_code_grants <<<"$STATS_A")" == 2 ]] || die "authorization_code_grants != 2"
[[ "$(jget refresh_grants <<<"$STATS_A")" == 4 ]] || die "refresh_grants != 4"
[[ "$(jget grant_errors <<<"$STATS_A")" == 4 ]] || die "grant_errors != 4 (reuse, revoked, invalid_target, consumed)"
[[ "$(jget injected_failures <<<"$STATS_A")" == 2 ]] || die "injected_failures != 2"
[[ "$(jget authorizations <<<"$STATS_A")" == 2 ]] || die "authorizations != 2"
[[ "$(jget userinfo_requests <<<"$STATS_A")" == 0 ]] || die "userinfo_requests != 0"
stop_provider

# =======================================================================================
JAR="$WORK/cookies-b.txt"
CONFIG_B="{\"jwtAccessTokens\":{\"audience\":\"$AUDIENCE\"},\"tokenEndpointDelayMs\":$DELAY_MS}"
AT_TTL_EXPECTED=300
step "provider B: OIDC_CONFIG=$CONFIG_B"
start_provider "$CONFIG_B"
ok "pid $PROVIDER_PID, issuer $ISSUER"
login

step "token requests take >= ${DELAY_MS} ms, other endpoints don't"
t0=$(now_ms); s=$(token_code "$WORK/btok1"); t_code=$(($(now_ms) - t0)); expect_status "$s" 200 "$WORK/btok1"
RTB=$(jget refresh_token <"$WORK/btok1.b")
check_jwt_at "$(jget access_token <"$WORK/btok1.b")" >/dev/null || die "JWT check (provider B)"
t0=$(now_ms); s=$(token_refresh "$WORK/btok2" "$RTB"); t_refresh=$(($(now_ms) - t0)); expect_status "$s" 200 "$WORK/btok2"
[[ "$(jget refresh_token <"$WORK/btok2.b")" == "$RTB" ]] || die "rotation off: expected the same refresh token"
check_jwt_at "$(jget access_token <"$WORK/btok2.b")" >/dev/null || die "JWT check after refresh (provider B)"
t0=$(now_ms); s=$(req "$WORK/bjwks" "$JWKS"); t_jwks=$(($(now_ms) - t0)); expect_status "$s" 200 "$WORK/bjwks"
t0=$(now_ms); s=$(req "$WORK/bdisco" "$ISSUER/.well-known/openid-configuration"); t_disco=$(($(now_ms) - t0)); expect_status "$s" 200 "$WORK/bdisco"
((t_code >= DELAY_MS)) || die "authorization_code token request took $t_code ms < $DELAY_MS"
((t_refresh >= DELAY_MS)) || die "refresh token request took $t_refresh ms < $DELAY_MS"
((t_jwks < DELAY_MS / 2 && t_disco < DELAY_MS / 2)) || die "jwks/discovery slow: $t_jwks / $t_disco ms"
ok "authorization_code $t_code ms, refresh $t_refresh ms (JWTs, same refresh token: rotation off), /jwks $t_jwks ms, discovery $t_disco ms"

step "an unknown resource is refused (invalid_target); without rotation the refresh token survives it"
s=$(token_refresh "$WORK/btok3" "$RTB" --data-urlencode resource=https://other.example.test); expect_status "$s" 400 "$WORK/btok3"
[[ "$(jget error <"$WORK/btok3.b")" == invalid_target ]] || die "expected invalid_target: $(cat "$WORK/btok3.b")"
s=$(token_refresh "$WORK/btok4" "$RTB"); expect_status "$s" 200 "$WORK/btok4"
ok "400 $(cat "$WORK/btok3.b"), then 200"

step "5 concurrent refreshes overlap (total ~${DELAY_MS} ms, not 5 x ${DELAY_MS})"
t0=$(now_ms)
pids=()
for i in 1 2 3 4 5; do token_refresh "$WORK/par$i" "$RTB" >"$WORK/par$i.status" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p" || true; done
t_par=$(($(now_ms) - t0))
for i in 1 2 3 4 5; do
  [[ "$(cat "$WORK/par$i.status")" == 200 ]] || die "concurrent refresh $i: $(cat "$WORK/par$i.status") $(cat "$WORK/par$i.b")"
  check_jwt_at "$(jget access_token <"$WORK/par$i.b")" >/dev/null || die "concurrent refresh $i: JWT check"
done
((t_par >= DELAY_MS && t_par < 2 * DELAY_MS)) || die "5 concurrent refreshes took $t_par ms"
ok "5 x 200 with JWT access tokens in $t_par ms total"

step "fail-token-endpoint with 5 concurrent refreshes: exactly count=2 fail (also after the delay)"
s=$(fail_token_endpoint '{"status":502,"count":2}'); [[ "$s" == 200 ]] || die "arm: $s"
t0=$(now_ms)
pids=()
for i in 1 2 3 4 5; do
  ( s1=$(now_ms); st=$(token_refresh "$WORK/pf$i" "$RTB"); echo "$st $(($(now_ms) - s1))" >"$WORK/pf$i.status" ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
t_pf=$(($(now_ms) - t0))
n502=0; n200=0; times=""
for i in 1 2 3 4 5; do
  read -r st ms <"$WORK/pf$i.status"; times="$times $st:${ms}ms"
  ((ms >= DELAY_MS)) || die "request $i answered after $ms ms < $DELAY_MS"
  case "$st" in
    502) n502=$((n502 + 1)); [[ "$(cat "$WORK/pf$i.b")" == '{"error":"temporarily_unavailable"}' ]] || die "body $(cat "$WORK/pf$i.b")" ;;
    200) n200=$((n200 + 1)) ;;
    *) die "unexpected status $st" ;;
  esac
done
((n502 == 2 && n200 == 3)) || die "expected 2 x 502 + 3 x 200, got$times"
ok "$times (total $t_pf ms)"

step "counters (provider B)"
STATS_B=$(curl_ -s "$ISSUER/test/stats")
ok "$STATS_B"
[[ "$(jget refresh_grants <<<"$STATS_B")" == 10 ]] || die "refresh_grants != 10"
[[ "$(jget injected_failures <<<"$STATS_B")" == 2 ]] || die "injected_failures != 2"
[[ "$(jget grant_errors <<<"$STATS_B")" == 1 ]] || die "grant_errors != 1"
stop_provider

# =======================================================================================
step "bad values of the new options are refused with exit status 2"
for bad in '{"jwtAccessTokens":"https://api.example.test"}' '{"jwtAccessTokens":{}}' \
           '{"jwtAccessTokens":{"audience":"x","aud":"y"}}' '{"tokenEndpointDelayMs":-1}' '{"tokenEndpointDelayMs":1.5}'; do
  set +e; OIDC_CONFIG="$bad" PORT= node "$HERE/provider.mjs" </dev/null >"$WORK/bad.out" 2>"$WORK/bad.err"; rc=$?; set -e
  [[ $rc -eq 2 && ! -s "$WORK/bad.out" ]] || die "$bad: exit $rc, stdout $(cat "$WORK/bad.out")"
  printf '     %s -> %s\n' "$bad" "$(grep fatal "$WORK/bad.err" | sed 's/^\[test-oidc-provider\] //')"
done
ok "all refused"

END_NS=$(date +%s%N)
printf '\nALL %d STEPS PASSED in %d ms\n' "$STEP" $(((END_NS - START_NS) / 1000000))
