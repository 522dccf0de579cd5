#!/usr/bin/env bash
# Proof that the test OpenID Provider (provider.mjs) supports the four client authentication
# methods for real: client_secret_basic, client_secret_post, private_key_jwt (RFC 7523 client
# assertions built here with node:crypto, ES256 and RS256) and none (public client), each through
# a full login (curl + cookie jar through devInteractions), code exchange, refresh and
# revocation; which `aud` values of a client assertion the token, PAR and revocation endpoints
# accept; pushed authorization requests (RFC 9126) incl. a client that requires them; a plain
# OAuth 2.0 client without `openid`; and the test routes GET /test/last-authorization and
# GET /test/last-client-auth.
#
# Usage: bash tests/oidc/client-auth-check.sh      (needs node >= 18, curl, openssl)
# Exits 0 only if every step passed. Every curl call has a timeout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
START_NS=$(date +%s%N)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oidc-client-auth.XXXXXX")
PROVIDER_PID=""
STDIN_FD=""
STEP=0
LOGIN=alice
REDIRECT_URI=https://rp.example.test/callback

CURL=(curl -sS --connect-timeout 5 --max-time 10)

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

step() { STEP=$((STEP + 1)); printf '\n[%02d] (+%d ms) %s\n' "$STEP" $((($(date +%s%N) - START_NS) / 1000000)) "$*"; }
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
# jhas KEY < json -> exit 0 if the key is present (any value)
jhas() { node -e 'const o = JSON.parse(require("fs").readFileSync(0, "utf8")); process.exit(process.argv[1] in o ? 0 : 1)' "$1"; }
# jeq FILE EXPECTED_JSON -> exit 0 if FILE's JSON deep-equals EXPECTED_JSON (key order ignored)
jeq() {
  node -e '
    const fs = require("fs");
    const norm = (v) => Array.isArray(v) ? v.map(norm) : v && typeof v === "object"
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, norm(v[k])])) : v;
    const a = JSON.stringify(norm(JSON.parse(fs.readFileSync(process.argv[1], "utf8"))));
    const b = JSON.stringify(norm(JSON.parse(process.argv[2])));
    if (a !== b) { console.error("     got:  " + a + "\n     want: " + b); process.exit(1); }
  ' "$1" "$2"
}

# req OUT_PREFIX CURL_ARGS... -> prints the HTTP status; headers in OUT.h, body in OUT.b
req() {
  local out=$1; shift
  "${CURL[@]}" -D "$out.h" -o "$out.b" -w '%{http_code}' "$@"
}
header() { grep -i "^$2:" "$1.h" | head -n1 | cut -d' ' -f2- | tr -d '\r'; }
absolute() { case "$1" in http://*|https://*) printf '%s' "$1" ;; /*) printf '%s%s' "$ISSUER" "$1" ;; *) die "unexpected Location $1" ;; esac; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
expect_status() { [[ "$1" == "$2" ]] || { echo "     response headers:"; cat "$3.h" 2>/dev/null || true; echo "     body: $(head -c 600 "$3.b" 2>/dev/null)"; die "expected HTTP $2, got $1"; }; }
expect_error() { [[ "$(jget error <"$1.b")" == "$2" ]] || die "expected error $2, got $(cat "$1.b")"; }
qparam() { node -e 'process.stdout.write(new URL(process.argv[1]).searchParams.get(process.argv[2]) ?? "")' "$1" "$2"; }
new_pkce() { VERIFIER=$(openssl rand 48 | b64url); CHALLENGE=$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | b64url); }

# assertion CLIENT_ID AUD_JSON [KEYFILE] [EXP_OFFSET] -> RFC 7523 client assertion (iss=sub=client_id,
# aud, jti, iat, exp=iat+60 by default), signed with the key pair in KEYFILE (client-keys.mjs output)
assertion() {
  node -e '
    const crypto = require("crypto"); const fs = require("fs");
    const [clientId, audJson, keyFile, expOffset] = process.argv.slice(1);
    const k = JSON.parse(fs.readFileSync(keyFile, "utf8"));
    const now = Math.floor(Date.now() / 1000);
    const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const input = enc({ alg: k.alg, typ: "JWT", kid: k.kid }) + "." + enc({
      iss: clientId, sub: clientId, aud: JSON.parse(audJson),
      jti: crypto.randomUUID(), iat: now, exp: now + Number(expOffset),
    });
    const key = crypto.createPrivateKey(k.private_key_pem);
    const sig = k.alg === "ES256"
      ? crypto.sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" })
      : crypto.sign("sha256", Buffer.from(input), key);
    process.stdout.write(input + "." + sig.toString("base64url"));
  ' "$1" "$2" "${3:-$WORK/es256.json}" "${4:-60}"
}

# client_auth CLIENT AUD -> sets the array AUTH to the curl arguments authenticating CLIENT
# (basic-client, post-client, jwt-client, rs-jwt-client, public-client, par-client, oauth-client)
client_auth() {
  case "$1" in
    basic-client) AUTH=(-u "basic-client:basic-secret") ;;
    par-client) AUTH=(-u "par-client:par-secret") ;;
    oauth-client) AUTH=(-u "oauth-client:oauth-secret") ;;
    post-client) AUTH=(--data-urlencode client_id=post-client --data-urlencode client_secret=post-secret) ;;
    jwt-client) AUTH=(--data-urlencode client_id=jwt-client
      --data-urlencode client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
      --data-urlencode "client_assertion=$(assertion jwt-client "\"$2\"" "$WORK/es256.json")") ;;
    rs-jwt-client) AUTH=(--data-urlencode client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
      --data-urlencode "client_assertion=$(assertion rs-jwt-client "\"$2\"" "$WORK/rs256.json")") ;;
    public-client) AUTH=(--data-urlencode client_id=public-client) ;;
    *) die "unknown client $1" ;;
  esac
}

# login JAR URL -> follows the authorization flow (login as $LOGIN, consent) from URL until the
# redirect to $REDIRECT_URI; sets CALLBACK to that Location. Every hop must be a 303 or a page.
login() {
  local jar=$1 url=$2 s loc prompt action i
  for i in $(seq 1 12); do
    s=$(req "$WORK/hop$i" -b "$jar" -c "$jar" "$url")
    if [[ "$s" == 200 ]]; then
      prompt=$(sed -n 's/.*name="prompt" value="\([a-z]*\)".*/\1/p' "$WORK/hop$i.b" | head -n1)
      action=$(sed -n 's/.*<form[^>]*action="\([^"]*\)".*/\1/p' "$WORK/hop$i.b" | head -n1)
      [[ -n "$prompt" && "$action" == "$url" ]] || die "hop $i: unexpected page at $url: $(head -c 300 "$WORK/hop$i.b")"
      if [[ "$prompt" == login ]]; then
        s=$(req "$WORK/hop$i-post" -b "$jar" -c "$jar" "$action" --data-urlencode prompt=login --data-urlencode login=$LOGIN --data-urlencode password=x)
      else
        s=$(req "$WORK/hop$i-post" -b "$jar" -c "$jar" "$action" --data-urlencode "prompt=$prompt")
      fi
      expect_status "$s" 303 "$WORK/hop$i-post"
      url=$(absolute "$(header "$WORK/hop$i-post" location)")
      continue
    fi
    expect_status "$s" 303 "$WORK/hop$i"
    loc=$(header "$WORK/hop$i" location)
    if [[ "$loc" == "$REDIRECT_URI?"* ]]; then CALLBACK=$loc; return 0; fi
    url=$(absolute "$loc")
  done
  die "no redirect to $REDIRECT_URI after 12 hops"
}

# code_from_callback -> CODE (and checks state, iss, no error)
code_from_callback() {
  [[ -z "$(qparam "$CALLBACK" error)" ]] || die "authorization error: $CALLBACK"
  CODE=$(qparam "$CALLBACK" code)
  [[ -n "$CODE" ]] || die "no code in $CALLBACK"
  [[ "$(qparam "$CALLBACK" state)" == "$1" ]] || die "state mismatch in $CALLBACK"
  [[ "$(qparam "$CALLBACK" iss)" == "$ISSUER" ]] || die "iss mismatch in $CALLBACK"
}

last_client_auth_is() {  # ENDPOINT METHOD CLIENT_ID REGISTERED_METHOD
  local s
  s=$(req "$WORK/lca" "$ISSUER/test/last-client-auth"); expect_status "$s" 200 "$WORK/lca"
  # assertion_aud (present with a client assertion) is checked where the aud matters.
  node -e 'const fs = require("fs"); const v = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    delete v.assertion_aud; fs.writeFileSync(process.argv[2], JSON.stringify(v));' "$WORK/lca.b" "$WORK/lca.core"
  jeq "$WORK/lca.core" "{\"endpoint\":\"$1\",\"method\":\"$2\",\"client_id\":\"$3\",\"registered_method\":\"$4\"}" \
    || die "/test/last-client-auth mismatch"
}

# ---------------------------------------------------------------------------------------
step "install dependencies (npm ci) if needed"
if [[ ! -d "$HERE/node_modules/oidc-provider" ]]; then
  timeout 300 npm ci --prefix "$HERE" --no-audit --no-fund >&2
fi
ok "oidc-provider $(node -p "require('$HERE/node_modules/oidc-provider/package.json').version")"

# ---------------------------------------------------------------------------------------
step "client key pairs from client-keys.mjs (ES256 default, RS256)"
node "$HERE/client-keys.mjs" >"$WORK/es256.json"
node "$HERE/client-keys.mjs" RS256 >"$WORK/rs256.json"
[[ "$(wc -l <"$WORK/es256.json")" -eq 1 ]] || die "client-keys.mjs must print exactly one line"
[[ "$(jget alg <"$WORK/es256.json")" == ES256 && "$(jget public_jwk.kty <"$WORK/es256.json")" == EC ]] || die "bad ES256 key"
[[ "$(jget alg <"$WORK/rs256.json")" == RS256 && "$(jget public_jwk.kty <"$WORK/rs256.json")" == RSA ]] || die "bad RS256 key"
[[ "$(jget public_jwk.kid <"$WORK/es256.json")" == "$(jget kid <"$WORK/es256.json")" ]] || die "kid mismatch"
[[ "$(jget private_key_pem <"$WORK/es256.json")" == "-----BEGIN PRIVATE KEY-----"* ]] || die "not PKCS#8 PEM"
[[ -z "$(jget public_jwk.d <"$WORK/es256.json")" ]] || die "public_jwk contains the private part"
ok "ES256 kid $(jget kid <"$WORK/es256.json"), RS256 kid $(jget kid <"$WORK/rs256.json")"

# ---------------------------------------------------------------------------------------
step "start provider.mjs with one client per authentication method (OIDC_CONFIG.clients)"
OIDC_CONFIG=$(node -e '
  const fs = require("fs");
  const [ru, es, rs] = process.argv.slice(1);
  const base = { grant_types: ["authorization_code", "refresh_token"], response_types: ["code"], redirect_uris: [ru] };
  const pub = (f) => JSON.parse(fs.readFileSync(f, "utf8")).public_jwk;
  console.log(JSON.stringify({ clients: [
    { client_id: "basic-client", client_secret: "basic-secret", token_endpoint_auth_method: "client_secret_basic", ...base },
    { client_id: "post-client", client_secret: "post-secret", token_endpoint_auth_method: "client_secret_post", ...base },
    { client_id: "jwt-client", token_endpoint_auth_method: "private_key_jwt", token_endpoint_auth_signing_alg: "ES256", jwks: { keys: [pub(es)] }, ...base },
    { client_id: "rs-jwt-client", token_endpoint_auth_method: "private_key_jwt", token_endpoint_auth_signing_alg: "RS256", jwks: { keys: [pub(rs)] }, ...base },
    { client_id: "public-client", token_endpoint_auth_method: "none", ...base },
    { client_id: "par-client", client_secret: "par-secret", token_endpoint_auth_method: "client_secret_basic", require_pushed_authorization_requests: true, ...base },
    { client_id: "oauth-client", client_secret: "oauth-secret", token_endpoint_auth_method: "client_secret_basic", scope: "profile email offline_access", ...base },
  ] }));
' "$REDIRECT_URI" "$WORK/es256.json" "$WORK/rs256.json")
mkfifo "$WORK/stdin"
T0=$(date +%s%N)
PORT= OIDC_CONFIG="$OIDC_CONFIG" MAX_LIFETIME_SECONDS=180 node "$HERE/provider.mjs" <"$WORK/stdin" >"$WORK/provider.stdout" 2>"$WORK/provider.stderr" &
PROVIDER_PID=$!
exec {STDIN_FD}>"$WORK/stdin"
for _ in $(seq 1 200); do
  if [[ -s "$WORK/provider.stdout" ]] && [[ "$(tail -c1 "$WORK/provider.stdout" | od -An -c | tr -d ' ')" == '\n' ]]; then break; fi
  kill -0 "$PROVIDER_PID" 2>/dev/null || die "provider exited before printing its issuer"
  sleep 0.05
done
ISSUER=$(head -n1 "$WORK/provider.stdout" | jget issuer)
[[ "$ISSUER" =~ ^http://127\.0\.0\.1:[0-9]+$ ]] || die "bad issuer line: $(head -n1 "$WORK/provider.stdout")"
ok "pid $PROVIDER_PID, issuer $ISSUER, ready in $((($(date +%s%N) - T0) / 1000000)) ms"

# ---------------------------------------------------------------------------------------
step "discovery advertises the methods, algs and the PAR endpoint"
s=$(req "$WORK/disco" "$ISSUER/.well-known/openid-configuration"); expect_status "$s" 200 "$WORK/disco"
D="$WORK/disco.b"
AUTHZ=$(jget authorization_endpoint <"$D"); TOKEN=$(jget token_endpoint <"$D")
USERINFO=$(jget userinfo_endpoint <"$D"); REVOKE=$(jget revocation_endpoint <"$D")
INTROSPECT=$(jget introspection_endpoint <"$D"); PAR=$(jget pushed_authorization_request_endpoint <"$D")
for v in AUTHZ TOKEN USERINFO REVOKE INTROSPECT PAR; do [[ -n "${!v}" ]] || die "discovery lacks $v"; done
[[ "$PAR" == "$ISSUER/request" ]] || die "PAR endpoint $PAR"
methods=$(jget token_endpoint_auth_methods_supported <"$D")
for m in client_secret_basic client_secret_post private_key_jwt none; do [[ "$methods" == *"\"$m\""* ]] || die "$m not in $methods"; done
algs=$(jget token_endpoint_auth_signing_alg_values_supported <"$D")
for a in ES256 RS256; do [[ "$algs" == *"\"$a\""* ]] || die "$a not in $algs"; done
jhas require_pushed_authorization_requests <"$D" && die "PAR must not be required server-wide"
ok "token_endpoint_auth_methods_supported=$methods"
ok "token_endpoint_auth_signing_alg_values_supported=$algs"
ok "pushed_authorization_request_endpoint=$PAR, no require_pushed_authorization_requests"
s=$(req "$WORK/lca0" "$ISSUER/test/last-client-auth"); expect_status "$s" 404 "$WORK/lca0"
s=$(req "$WORK/la0" "$ISSUER/test/last-authorization"); expect_status "$s" 404 "$WORK/la0"
ok "before any request: /test/last-client-auth 404 $(cat "$WORK/lca0.b"), /test/last-authorization 404 $(cat "$WORK/la0.b")"

# ---------------------------------------------------------------------------------------
# full_flow CLIENT METHOD PRETTY: login (with extra params), code exchange, refresh, revocation
full_flow() {
  local client=$1 method=$2 jar="$WORK/jar-$1" state nonce at1 rt1 at2 rt2 s
  rm -f "$jar"
  state="st-$client-$(openssl rand -hex 4)"; nonce=$(openssl rand -hex 8); new_pkce
  step "$client ($method): authorization request with extra parameters + login + consent"
  local url
  url="$AUTHZ?$(node -e '
    const [c, ru, st, n, ch] = process.argv.slice(1);
    process.stdout.write(new URLSearchParams({ client_id: c, response_type: "code", scope: "openid profile email offline_access",
      redirect_uri: ru, state: st, nonce: n, code_challenge: ch, code_challenge_method: "S256", prompt: "consent",
      ui_locales: "fr en", login_hint: "alice+" + c + "@example.test", access_type: "offline" }).toString().replace(/\+/g, "%20"));
  ' "$client" "$REDIRECT_URI" "$state" "$nonce" "$CHALLENGE")"
  login "$jar" "$url"
  code_from_callback "$state"
  ok "code received; $CALLBACK"
  s=$(req "$WORK/la" "$ISSUER/test/last-authorization"); expect_status "$s" 200 "$WORK/la"
  jeq "$WORK/la.b" "{\"client_id\":\"$client\",\"response_type\":\"code\",\"scope\":\"openid profile email offline_access\",
    \"redirect_uri\":\"$REDIRECT_URI\",\"state\":\"$state\",\"nonce\":\"$nonce\",\"code_challenge\":\"$CHALLENGE\",
    \"code_challenge_method\":\"S256\",\"prompt\":\"consent\",\"ui_locales\":\"fr en\",
    \"login_hint\":\"alice+$client@example.test\",\"access_type\":\"offline\",\"pushed\":false}" || die "/test/last-authorization mismatch"
  ok "/test/last-authorization: $(cat "$WORK/la.b")"

  step "$client ($method): code exchange"
  client_auth "$client" "$TOKEN"
  s=$(req "$WORK/tok1" "$TOKEN" "${AUTH[@]}" --data-urlencode grant_type=authorization_code --data-urlencode code="$CODE" \
    --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode code_verifier="$VERIFIER")
  expect_status "$s" 200 "$WORK/tok1"
  at1=$(jget access_token <"$WORK/tok1.b"); rt1=$(jget refresh_token <"$WORK/tok1.b")
  [[ -n "$at1" && -n "$rt1" && -n "$(jget id_token <"$WORK/tok1.b")" ]] || die "token response lacks a token: $(cat "$WORK/tok1.b")"
  [[ "$(jget scope <"$WORK/tok1.b")" == "openid profile email offline_access" ]] || die "scope $(jget scope <"$WORK/tok1.b")"
  last_client_auth_is token "$method" "$client" "$method"
  ok "access_token, id_token, refresh_token; scope '$(jget scope <"$WORK/tok1.b")'; /test/last-client-auth $(cat "$WORK/lca.b")"

  step "$client ($method): refresh"
  client_auth "$client" "$ISSUER"   # for private_key_jwt: aud = issuer this time
  s=$(req "$WORK/tok2" "$TOKEN" "${AUTH[@]}" --data-urlencode grant_type=refresh_token --data-urlencode refresh_token="$rt1")
  expect_status "$s" 200 "$WORK/tok2"
  at2=$(jget access_token <"$WORK/tok2.b"); rt2=$(jget refresh_token <"$WORK/tok2.b")
  [[ -n "$at2" && "$at2" != "$at1" && -n "$rt2" && -n "$(jget id_token <"$WORK/tok2.b")" ]] || die "bad refresh response $(cat "$WORK/tok2.b")"
  last_client_auth_is token "$method" "$client" "$method"
  s=$(req "$WORK/ui" -H "Authorization: Bearer $at2" "$USERINFO"); expect_status "$s" 200 "$WORK/ui"
  ok "new access token (userinfo 200), refresh token $([[ "$rt2" == "$rt1" ]] && echo 'unchanged' || echo 'rotated')"

  step "$client ($method): revoke the refresh token, then refresh fails"
  client_auth "$client" "$REVOKE"
  s=$(req "$WORK/rev" "$REVOKE" "${AUTH[@]}" --data-urlencode token="$rt2" --data-urlencode token_type_hint=refresh_token)
  expect_status "$s" 200 "$WORK/rev"
  last_client_auth_is revocation "$method" "$client" "$method"
  client_auth "$client" "$TOKEN"
  s=$(req "$WORK/tok3" "$TOKEN" "${AUTH[@]}" --data-urlencode grant_type=refresh_token --data-urlencode refresh_token="$rt2")
  expect_status "$s" 400 "$WORK/tok3"; expect_error "$WORK/tok3" invalid_grant
  s=$(req "$WORK/ui" -H "Authorization: Bearer $at2" "$USERINFO"); expect_status "$s" 401 "$WORK/ui"
  ok "revocation 200 ($(cat "$WORK/lca.b")); refresh -> 400 invalid_grant; access token dead (userinfo 401)"
}

T_FLOWS=$(date +%s%N)
full_flow basic-client client_secret_basic
full_flow post-client client_secret_post
full_flow jwt-client private_key_jwt
full_flow rs-jwt-client private_key_jwt
full_flow public-client none
ok "5 full flows in $((($(date +%s%N) - T_FLOWS) / 1000000)) ms"

# ---------------------------------------------------------------------------------------
step "wrong credentials are refused (and do not touch /test/last-client-auth)"
s=$(req "$WORK/bad1" "$TOKEN" -u basic-client:wrong --data-urlencode grant_type=refresh_token --data-urlencode refresh_token=x)
expect_status "$s" 401 "$WORK/bad1"; expect_error "$WORK/bad1" invalid_client
s=$(req "$WORK/bad2" "$TOKEN" --data-urlencode client_id=jwt-client --data-urlencode grant_type=refresh_token --data-urlencode refresh_token=x)
expect_status "$s" 401 "$WORK/bad2"; expect_error "$WORK/bad2" invalid_client
s=$(req "$WORK/bad3" "$REVOKE" --data-urlencode client_id=basic-client --data-urlencode token=x)
expect_status "$s" 401 "$WORK/bad3"; expect_error "$WORK/bad3" invalid_client
s=$(req "$WORK/bad4" "$PAR" -u post-client:post-secret --data-urlencode client_secret=post-secret \
  --data-urlencode client_id=post-client --data-urlencode response_type=code)
expect_status "$s" 400 "$WORK/bad4"; expect_error "$WORK/bad4" invalid_request
s=$(req "$WORK/bad5" "$PAR" -u par-client:wrong --data-urlencode response_type=code --data-urlencode scope=openid \
  --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode code_challenge=$(printf x%.0s {1..43}) --data-urlencode code_challenge_method=S256)
expect_status "$s" 401 "$WORK/bad5"; expect_error "$WORK/bad5" invalid_client
last_client_auth_is token none public-client none
ok "wrong secret 401 invalid_client; private_key_jwt client without assertion 401 invalid_client; basic client without secret at revocation 401; two mechanisms at PAR 400 invalid_request ($(jget error_description <"$WORK/bad4.b")); wrong secret at PAR 401 invalid_client; last-client-auth unchanged"

step "oidc-provider quirk: a client_secret_basic client may also authenticate with client_secret_post (and vice versa)"
s=$(req "$WORK/x1" "$REVOKE" --data-urlencode client_id=basic-client --data-urlencode client_secret=basic-secret --data-urlencode token=x)
expect_status "$s" 200 "$WORK/x1"
last_client_auth_is revocation client_secret_post basic-client client_secret_basic
s=$(req "$WORK/x2" "$REVOKE" -u post-client:post-secret --data-urlencode token=x)
expect_status "$s" 200 "$WORK/x2"
last_client_auth_is revocation client_secret_basic post-client client_secret_post
ok "both 200; /test/last-client-auth tells method (used) from registered_method: $(cat "$WORK/lca.b")"

# ---------------------------------------------------------------------------------------
# which `aud` does each endpoint accept in a private_key_jwt client assertion?
# Authentication is judged by a request that fails after it: token endpoint: an unknown refresh
# token (auth ok -> 400 invalid_grant), revocation: an unknown token (auth ok -> 200),
# PAR: a valid pushed request (auth ok -> 201). Auth failure -> 401 invalid_client.
aud_probe() {  # ENDPOINT_URL AUD_JSON -> prints "ok" or "refused"
  local url=$1 aud=$2 s a
  a=$(assertion jwt-client "$aud")
  local common=(--data-urlencode client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer --data-urlencode "client_assertion=$a")
  if [[ "$url" == "$TOKEN" ]]; then
    s=$(req "$WORK/aud" "$url" "${common[@]}" --data-urlencode grant_type=refresh_token --data-urlencode refresh_token=unknown)
    [[ "$s" == 400 && "$(jget error <"$WORK/aud.b")" == invalid_grant ]] && { echo ok; return; }
  elif [[ "$url" == "$REVOKE" ]]; then
    s=$(req "$WORK/aud" "$url" "${common[@]}" --data-urlencode token=unknown)
    [[ "$s" == 200 ]] && { echo ok; return; }
  else
    new_pkce
    s=$(req "$WORK/aud" "$url" "${common[@]}" --data-urlencode client_id=jwt-client --data-urlencode response_type=code \
      --data-urlencode scope=openid --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode code_challenge="$CHALLENGE" \
      --data-urlencode code_challenge_method=S256)
    [[ "$s" == 201 ]] && { echo ok; return; }
  fi
  [[ "$s" == 401 && "$(jget error <"$WORK/aud.b")" == invalid_client ]] || die "aud probe $url $aud: unexpected $s $(cat "$WORK/aud.b")"
  echo refused
}
step "private_key_jwt: accepted client assertion audiences at the token, PAR and revocation endpoints"
declare -A WANT=(
  ["$TOKEN|\"$ISSUER\""]=ok ["$TOKEN|\"$TOKEN\""]=ok ["$TOKEN|\"$PAR\""]=refused ["$TOKEN|\"$REVOKE\""]=refused
  ["$PAR|\"$ISSUER\""]=ok ["$PAR|\"$TOKEN\""]=ok ["$PAR|\"$PAR\""]=ok ["$PAR|\"$REVOKE\""]=refused
  ["$REVOKE|\"$ISSUER\""]=ok ["$REVOKE|\"$TOKEN\""]=ok ["$REVOKE|\"$PAR\""]=refused ["$REVOKE|\"$REVOKE\""]=ok
)
for ep in "$TOKEN" "$PAR" "$REVOKE"; do
  line=""
  for aud in "\"$ISSUER\"" "\"$TOKEN\"" "\"$PAR\"" "\"$REVOKE\"" "\"$ISSUER/\"" "\"$INTROSPECT\"" "\"https://elsewhere.example.test\"" \
             "[\"https://elsewhere.example.test\",\"$ISSUER\"]" "[\"https://elsewhere.example.test\"]"; do
    got=$(aud_probe "$ep" "$aud")
    want=${WANT["$ep|$aud"]:-}
    case "$aud" in
      "\"$ISSUER/\""|"\"$INTROSPECT\""|'"https://elsewhere.example.test"'|'["https://elsewhere.example.test"]') want=refused ;;
      "["*) want=ok ;;
    esac
    [[ "$got" == "$want" ]] || die "at $ep aud=$aud: got $got, want $want"
    line+=$'\n'"       aud=$aud -> $got"
  done
  ok "endpoint $ep:$line"
done

step "private_key_jwt: a replayed assertion, an expired one and one signed by another key are refused"
a=$(assertion jwt-client "\"$TOKEN\"")
common=(--data-urlencode client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer --data-urlencode grant_type=refresh_token --data-urlencode refresh_token=unknown)
s=$(req "$WORK/r1" "$TOKEN" "${common[@]}" --data-urlencode "client_assertion=$a"); expect_status "$s" 400 "$WORK/r1"; expect_error "$WORK/r1" invalid_grant
s=$(req "$WORK/r2" "$TOKEN" "${common[@]}" --data-urlencode "client_assertion=$a"); expect_status "$s" 401 "$WORK/r2"; expect_error "$WORK/r2" invalid_client
a=$(assertion jwt-client "\"$TOKEN\"" "$WORK/es256.json" -120)
s=$(req "$WORK/r3" "$TOKEN" "${common[@]}" --data-urlencode "client_assertion=$a"); expect_status "$s" 401 "$WORK/r3"; expect_error "$WORK/r3" invalid_client
node "$HERE/client-keys.mjs" >"$WORK/other.json"
node -e 'const fs=require("fs"); const o=JSON.parse(fs.readFileSync(process.argv[1])); o.kid=JSON.parse(fs.readFileSync(process.argv[2])).kid; fs.writeFileSync(process.argv[1], JSON.stringify(o))' "$WORK/other.json" "$WORK/es256.json"
a=$(assertion jwt-client "\"$TOKEN\"" "$WORK/other.json")
s=$(req "$WORK/r4" "$TOKEN" "${common[@]}" --data-urlencode "client_assertion=$a"); expect_status "$s" 401 "$WORK/r4"; expect_error "$WORK/r4" invalid_client
a=$(assertion jwt-client "\"$TOKEN\"" "$WORK/rs256.json")
s=$(req "$WORK/r5" "$TOKEN" "${common[@]}" --data-urlencode "client_assertion=$a"); expect_status "$s" 401 "$WORK/r5"; expect_error "$WORK/r5" invalid_client
ok "first use 400 invalid_grant (auth ok), replay 401, exp in the past 401, same kid other key 401, RS256 for an ES256 client 401"

# ---------------------------------------------------------------------------------------
step "PAR-required client: a plain authorization request is refused"
new_pkce; STATE=par-plain
s=$(req "$WORK/parplain" -G "$AUTHZ" --data-urlencode client_id=par-client --data-urlencode response_type=code \
  --data-urlencode scope=openid --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode state=$STATE \
  --data-urlencode code_challenge="$CHALLENGE" --data-urlencode code_challenge_method=S256)
expect_status "$s" 303 "$WORK/parplain"
loc=$(header "$WORK/parplain" location)
[[ "$loc" == "$REDIRECT_URI?"* && "$(qparam "$loc" error)" == invalid_request \
  && "$(qparam "$loc" error_description)" == "Pushed Authorization Request must be used" && "$(qparam "$loc" state)" == "$STATE" ]] \
  || die "unexpected refusal: $loc"
ok "303 Location: $loc"
s=$(req "$WORK/la" "$ISSUER/test/last-authorization"); expect_status "$s" 200 "$WORK/la"
[[ "$(jget client_id <"$WORK/la.b")" == public-client ]] || die "a refused request changed /test/last-authorization"
ok "/test/last-authorization unchanged (still the public-client request)"

step "PAR-required client: POST /request (client_secret_basic) with extra parameters -> 201 request_uri"
new_pkce; STATE="par st/ä+1"; NONCE=$(openssl rand -hex 8)
CLAIMS='{"id_token":{"auth_time":{"essential":true},"acr":null},"userinfo":{"email":null}}'
s=$(req "$WORK/par" "$PAR" -u par-client:par-secret --data-urlencode client_id=par-client --data-urlencode response_type=code \
  --data-urlencode "scope=openid profile email offline_access" --data-urlencode redirect_uri=$REDIRECT_URI \
  --data-urlencode "state=$STATE" --data-urlencode nonce="$NONCE" --data-urlencode code_challenge="$CHALLENGE" \
  --data-urlencode code_challenge_method=S256 --data-urlencode "ui_locales=fr en" --data-urlencode "login_hint=alice+par@example.test" \
  --data-urlencode "prompt=login consent" --data-urlencode "acr_values=urn:acr:one urn:acr:two" --data-urlencode max_age=3600 \
  --data-urlencode "claims=$CLAIMS" --data-urlencode access_type=offline)
expect_status "$s" 201 "$WORK/par"
REQUEST_URI=$(jget request_uri <"$WORK/par.b")
[[ "$REQUEST_URI" == urn:ietf:params:oauth:request_uri:* && "$(jget expires_in <"$WORK/par.b")" == 60 ]] || die "bad PAR response $(cat "$WORK/par.b")"
last_client_auth_is pushed_authorization_request client_secret_basic par-client client_secret_basic
ok "201 $(cat "$WORK/par.b"); /test/last-client-auth $(cat "$WORK/lca.b")"

step "PAR-required client: authorization request with only client_id + request_uri -> login -> code -> tokens"
rm -f "$WORK/jar-par"
login "$WORK/jar-par" "$AUTHZ?$(node -e 'process.stdout.write(new URLSearchParams({client_id: "par-client", request_uri: process.argv[1]}).toString())' "$REQUEST_URI")"
code_from_callback "$STATE"
s=$(req "$WORK/partok" "$TOKEN" -u par-client:par-secret --data-urlencode grant_type=authorization_code --data-urlencode code="$CODE" \
  --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode code_verifier="$VERIFIER")
expect_status "$s" 200 "$WORK/partok"
[[ -n "$(jget id_token <"$WORK/partok.b")" && -n "$(jget refresh_token <"$WORK/partok.b")" ]] || die "bad token response"
IDT_PAYLOAD=$(jget id_token <"$WORK/partok.b" | cut -d. -f2 | node -e 'process.stdout.write(Buffer.from(require("fs").readFileSync(0,"utf8").trim(),"base64url").toString())')
[[ "$(jget nonce <<<"$IDT_PAYLOAD")" == "$NONCE" && -n "$(jget auth_time <<<"$IDT_PAYLOAD")" ]] || die "ID token lacks the pushed nonce/auth_time: $IDT_PAYLOAD"
ok "code for state '$STATE'; tokens; ID token has the pushed nonce and auth_time (claims/max_age honoured)"

step "/test/last-authorization reports the PUSHED parameters exactly, pushed=true"
s=$(req "$WORK/la" "$ISSUER/test/last-authorization"); expect_status "$s" 200 "$WORK/la"
jeq "$WORK/la.b" "$(node -e '
  const [ru, st, n, ch, claims, uri] = process.argv.slice(1);
  console.log(JSON.stringify({ client_id: "par-client", response_type: "code", scope: "openid profile email offline_access",
    redirect_uri: ru, state: st, nonce: n, code_challenge: ch, code_challenge_method: "S256", ui_locales: "fr en",
    login_hint: "alice+par@example.test", prompt: "login consent", acr_values: "urn:acr:one urn:acr:two", max_age: "3600",
    claims, access_type: "offline", pushed: true, front_channel: { client_id: "par-client", request_uri: uri } }));
' "$REDIRECT_URI" "$STATE" "$NONCE" "$CHALLENGE" "$CLAIMS" "$REQUEST_URI")" || die "/test/last-authorization mismatch"
ok "$(cat "$WORK/la.b")"

step "the request_uri is single-use"
s=$(req "$WORK/parreuse" -G "$AUTHZ" --data-urlencode client_id=par-client --data-urlencode request_uri="$REQUEST_URI")
expect_status "$s" 303 "$WORK/parreuse"
loc=$(header "$WORK/parreuse" location)
[[ "$(qparam "$loc" error)" == invalid_request_uri ]] || die "unexpected $loc"
ok "303 $loc"

step "PAR with private_key_jwt (aud = PAR endpoint) and with a public client; plain client_id+request_uri login"
for c in jwt-client public-client; do
  new_pkce; STATE="st-par-$c"
  client_auth "$c" "$PAR"
  s=$(req "$WORK/par2" "$PAR" "${AUTH[@]}" --data-urlencode response_type=code --data-urlencode scope=openid \
    --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode state="$STATE" --data-urlencode code_challenge="$CHALLENGE" \
    --data-urlencode code_challenge_method=S256)
  expect_status "$s" 201 "$WORK/par2"
  if [[ "$c" == jwt-client ]]; then m=private_key_jwt; else m=none; fi
  last_client_auth_is pushed_authorization_request "$m" "$c" "$m"
  rm -f "$WORK/jar-par2"
  login "$WORK/jar-par2" "$AUTHZ?client_id=$c&request_uri=$(jget request_uri <"$WORK/par2.b" | sed 's/:/%3A/g')"
  code_from_callback "$STATE"
  s=$(req "$WORK/la" "$ISSUER/test/last-authorization"); expect_status "$s" 200 "$WORK/la"
  [[ "$(jget pushed <"$WORK/la.b")" == true && "$(jget state <"$WORK/la.b")" == "$STATE" ]] || die "last-authorization $(cat "$WORK/la.b")"
  [[ "$(jget client_id <"$WORK/la.b")" == "$c" ]] || die "client_id not reported"
  client_auth "$c" "$TOKEN"
  s=$(req "$WORK/par2tok" "$TOKEN" "${AUTH[@]}" --data-urlencode grant_type=authorization_code --data-urlencode code="$CODE" \
    --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode code_verifier="$VERIFIER")
  expect_status "$s" 200 "$WORK/par2tok"
  ok "$c: PAR 201 (method $m), login, code, tokens; last-authorization pushed=true, keys $(node -e 'console.log(Object.keys(JSON.parse(require("fs").readFileSync(process.argv[1]))).join(","))' "$WORK/la.b")"
done

step "PAR needs client_id in the form body, whatever the authentication method"
new_pkce
par_args=(--data-urlencode response_type=code --data-urlencode scope=openid --data-urlencode redirect_uri=$REDIRECT_URI
  --data-urlencode code_challenge="$CHALLENGE" --data-urlencode code_challenge_method=S256)
s=$(req "$WORK/p1" "$PAR" -u basic-client:basic-secret "${par_args[@]}"); expect_status "$s" 400 "$WORK/p1"; expect_error "$WORK/p1" invalid_request
client_auth rs-jwt-client "$PAR"   # assertion only, no client_id
s=$(req "$WORK/p2" "$PAR" "${AUTH[@]}" "${par_args[@]}"); expect_status "$s" 400 "$WORK/p2"; expect_error "$WORK/p2" invalid_request
s=$(req "$WORK/p3" "$PAR" -u basic-client:basic-secret --data-urlencode client_id=basic-client "${par_args[@]}"); expect_status "$s" 201 "$WORK/p3"
ok "Basic header only: 400 $(cat "$WORK/p1.b"); assertion only: 400 $(jget error_description <"$WORK/p2.b"); Basic + client_id in body: 201"

step "PAR: front-channel parameters besides client_id and request_uri are ignored (pushed ones win)"
new_pkce
s=$(req "$WORK/p4" "$PAR" -u basic-client:basic-secret --data-urlencode client_id=basic-client --data-urlencode response_type=code \
  --data-urlencode scope=openid --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode state=pushed-state \
  --data-urlencode code_challenge="$CHALLENGE" --data-urlencode code_challenge_method=S256)
expect_status "$s" 201 "$WORK/p4"
rm -f "$WORK/jar-p4"
login "$WORK/jar-p4" "$AUTHZ?$(node -e 'process.stdout.write(new URLSearchParams({client_id: "basic-client", request_uri: process.argv[1], state: "front-state", prompt: "none", scope: "openid email"}).toString())' "$(jget request_uri <"$WORK/p4.b")")"
code_from_callback pushed-state
s=$(req "$WORK/la" "$ISSUER/test/last-authorization"); expect_status "$s" 200 "$WORK/la"
[[ "$(jget state <"$WORK/la.b")" == pushed-state && "$(jget front_channel.state <"$WORK/la.b")" == front-state ]] || die "$(cat "$WORK/la.b")"
ok "prompt=none/state/scope on the front channel ignored: login happened, callback state=pushed-state; front_channel=$(jget front_channel <"$WORK/la.b")"

# ---------------------------------------------------------------------------------------
step "plain OAuth 2.0 client (scope without openid): nonce is refused, openid is refused"
new_pkce
s=$(req "$WORK/o1" -G "$AUTHZ" --data-urlencode client_id=oauth-client --data-urlencode response_type=code \
  --data-urlencode "scope=profile email" --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode state=o1 --data-urlencode nonce=n \
  --data-urlencode code_challenge="$CHALLENGE" --data-urlencode code_challenge_method=S256)
expect_status "$s" 303 "$WORK/o1"; loc1=$(header "$WORK/o1" location)
[[ "$(qparam "$loc1" error)" == invalid_request ]] || die "nonce without openid: $loc1"
s=$(req "$WORK/o2" -G "$AUTHZ" --data-urlencode client_id=oauth-client --data-urlencode response_type=code \
  --data-urlencode "scope=openid profile" --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode state=o2 \
  --data-urlencode code_challenge="$CHALLENGE" --data-urlencode code_challenge_method=S256)
expect_status "$s" 303 "$WORK/o2"; loc2=$(header "$WORK/o2" location)
[[ "$(qparam "$loc2" error)" == invalid_scope ]] || die "openid for a client without it: $loc2"
ok "nonce: $(qparam "$loc1" error) '$(qparam "$loc1" error_description)'; openid: $(qparam "$loc2" error) '$(qparam "$loc2" error_description)'"

step "plain OAuth 2.0 client: scope=profile email offline_access (prompt=consent) -> code -> access + refresh token, no ID token"
new_pkce; STATE=oauth-st
rm -f "$WORK/jar-oauth"
login "$WORK/jar-oauth" "$AUTHZ?$(node -e '
  const [ru, ch] = process.argv.slice(1);
  process.stdout.write(new URLSearchParams({ client_id: "oauth-client", response_type: "code", scope: "profile email offline_access",
    redirect_uri: ru, state: "oauth-st", code_challenge: ch, code_challenge_method: "S256", prompt: "consent" }).toString());
' "$REDIRECT_URI" "$CHALLENGE")"
code_from_callback "$STATE"
s=$(req "$WORK/ot1" "$TOKEN" -u oauth-client:oauth-secret --data-urlencode grant_type=authorization_code --data-urlencode code="$CODE" \
  --data-urlencode redirect_uri=$REDIRECT_URI --data-urlencode code_verifier="$VERIFIER")
expect_status "$s" 200 "$WORK/ot1"
jhas id_token <"$WORK/ot1.b" && die "an ID token was issued without openid"
OAT=$(jget access_token <"$WORK/ot1.b"); ORT=$(jget refresh_token <"$WORK/ot1.b")
[[ -n "$OAT" && -n "$ORT" ]] || die "missing tokens $(cat "$WORK/ot1.b")"
[[ "$(jget scope <"$WORK/ot1.b")" == "profile email offline_access" ]] || die "scope $(jget scope <"$WORK/ot1.b")"
ok "keys $(node -e 'console.log(Object.keys(JSON.parse(require("fs").readFileSync(process.argv[1]))).join(","))' "$WORK/ot1.b"); scope '$(jget scope <"$WORK/ot1.b")'"

step "plain OAuth 2.0 client: userinfo refuses the token, introspection shows it, refresh works without ID token"
s=$(req "$WORK/oui" -H "Authorization: Bearer $OAT" "$USERINFO"); expect_status "$s" 403 "$WORK/oui"; expect_error "$WORK/oui" insufficient_scope
s=$(req "$WORK/oin" "$INTROSPECT" -u oauth-client:oauth-secret --data-urlencode token="$OAT"); expect_status "$s" 200 "$WORK/oin"
[[ "$(jget active <"$WORK/oin.b")" == true && "$(jget scope <"$WORK/oin.b")" == "profile email offline_access" && "$(jget sub <"$WORK/oin.b")" == "$LOGIN" ]] || die "introspection $(cat "$WORK/oin.b")"
s=$(req "$WORK/ot2" "$TOKEN" -u oauth-client:oauth-secret --data-urlencode grant_type=refresh_token --data-urlencode refresh_token="$ORT")
expect_status "$s" 200 "$WORK/ot2"
jhas id_token <"$WORK/ot2.b" && die "refresh issued an ID token"
[[ -n "$(jget access_token <"$WORK/ot2.b")" && "$(jget scope <"$WORK/ot2.b")" == "profile email offline_access" ]] || die "refresh $(cat "$WORK/ot2.b")"
s=$(req "$WORK/orev" "$REVOKE" -u oauth-client:oauth-secret --data-urlencode token="$(jget refresh_token <"$WORK/ot2.b")"); expect_status "$s" 200 "$WORK/orev"
s=$(req "$WORK/ot3" "$TOKEN" -u oauth-client:oauth-secret --data-urlencode grant_type=refresh_token --data-urlencode refresh_token="$(jget refresh_token <"$WORK/ot2.b")")
expect_status "$s" 400 "$WORK/ot3"; expect_error "$WORK/ot3" invalid_grant
ok "userinfo 403 $(cat "$WORK/oui.b"); introspection active sub=$LOGIN; refresh 200 keys $(node -e 'console.log(Object.keys(JSON.parse(require("fs").readFileSync(process.argv[1]))).join(","))' "$WORK/ot2.b"); revoked -> invalid_grant"

# ---------------------------------------------------------------------------------------
step "POST /test/reset clears both records"
s=$(req "$WORK/reset" -X POST "$ISSUER/test/reset"); expect_status "$s" 204 "$WORK/reset"
s=$(req "$WORK/lca" "$ISSUER/test/last-client-auth"); expect_status "$s" 404 "$WORK/lca"
s=$(req "$WORK/la" "$ISSUER/test/last-authorization"); expect_status "$s" 404 "$WORK/la"
ok "both 404 after reset"

step "stop the provider (close its stdin)"
exec {STDIN_FD}>&-; STDIN_FD=""
for _ in $(seq 1 50); do kill -0 "$PROVIDER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PROVIDER_PID" 2>/dev/null && die "provider still running 5 s after stdin was closed"
set +e; wait "$PROVIDER_PID"; prc=$?; set -e
PROVIDER_PID=""
[[ $prc -eq 0 ]] || die "provider exit status $prc"
[[ "$(wc -l <"$WORK/provider.stdout")" -eq 1 ]] || die "provider wrote more than one line to stdout"
ok "exited 0"

END_NS=$(date +%s%N)
printf '\nALL %d STEPS PASSED in %d ms\n' "$STEP" $(((END_NS - START_NS) / 1000000))
