#!/usr/bin/env bash
# Proxy benchmark (issue 17): token-handler against the floor of its own stack, with nginx as
# the outside reference, all in the same rounds. Everything runs on loopback on this machine and
# is stopped by PID. Prints the Markdown report for docs/benchmarks.md.
#
# Targets, each in front of the same upstream (its own nginx process, a small JSON answer):
#   floor   examples/floor_proxy.rs: actix-web server + awc client + tokio, same worker count
#           and same client (oauth::http::build_client) as token-handler, nothing else
#   nginx   plain proxy_pass, keepalive 256 toward the upstream, same worker count
#   th 1k   token-handler with a session cookie holding a ~1 KB JWT access token
#   th 16k  the same process, a 16 KB access token (chunked cookies); the floor is measured
#           with the same Cookie headers too, 1 KB and 16 KB (it passes them through): the
#           same request in, without any of token-handler's work
#
# The figure that survives a busy machine is the CPU time each proxy spends per request (user +
# system from /proc/<pid>/stat over a fixed run, divided by the requests served): wrk, the
# upstream and the proxy share the cores, and other load slows all of them alike. Rounds
# alternate the targets and the report gives medians. Also: req/s and p99 at 32 and 256
# connections (wrk), p99 at 1,000 req/s evenly paced (hey -c2 -q500: two clients 1 ms apart,
# 0.1 ms resolution), the connection sweep to 4,096 keep-alive connections with RSS, the refresh
# storm and the login cost (ignored tests in tests/api/storm.rs, against the real provider).
#
# Usage: scripts/bench-proxy.sh [seconds per run, default 10] [rounds, default 3]
# NO_STORM=1 skips the storm and login cost (they build the test binary in release).
# STORM_SESSIONS (default 1000, issue 17's figure) and STORM_CALLS (default 5): the sessions whose
# access tokens expire together and the parallel calls each makes, all in flight at once (the
# test provider keeps its grants in an unbounded store, tests/oidc/map-adapter.mjs; about 20 s
# in release, logins included). The storm needs about two open files per call: hence the ulimit.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
WORKERS=$(nproc)

need() { command -v "$1" >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo;
  $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx; need wrk wrk; need hey hey
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The examples first, then the binary on its own: built together, the binary would get the
# dev-dependencies' features too (cargo unifies features across the targets of one build; tokio's
# test-util among them), and it would not be the binary `cargo build --release` ships.
[ -n "${NO_BUILD:-}" ] || { cargo build --release --quiet --example seal_cookie --example floor_proxy &&
  cargo build --release --quiet --bin token-handler; }
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/token-handler

source scripts/bench-common.sh
UP=$(port); NGX=$(port); TH=$(port); FL=$(port)
upstream_conf "$TMP/up" "$UP"
nginx_conf "$TMP/ngx" "$WORKERS" on "upstream api { server 127.0.0.1:$UP; keepalive 256; }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx -p "$TMP/up" -c "$TMP/up/nginx.conf" -e "$TMP/up/error.log" & PIDS+=($!)
nginx -p "$TMP/ngx" -c "$TMP/ngx/nginx.conf" -e "$TMP/ngx/error.log" & NGXPID=$!; PIDS+=($NGXPID)
"$TARGET/release/examples/floor_proxy" "127.0.0.1:$FL" "http://127.0.0.1:$UP" "$WORKERS" & FLPID=$!; PIDS+=($FLPID)
KEY=$($BIN keygen)
th_conf "$TMP/th.toml" "$TH" "$UP" "$WORKERS" "$KEY"
RUST_LOG=error $BIN --config "$TMP/th.toml" & THPID=$!; PIDS+=($THPID)
wait_port "$UP"; wait_port "$NGX"; wait_port "$TH"; wait_port "$FL"
NGX_WORKERS=$(ps -o pid= --ppid "$NGXPID" | tr -s ' \n' ' ')
COOKIE1K=$("$TARGET/release/examples/seal_cookie" "$KEY" 1000)
COOKIE16K=$("$TARGET/release/examples/seal_cookie" "$KEY" 16384)
CHUNKS16K=$(tr ';' '\n' <<<"$COOKIE16K" | wc -l)

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Idle: started and answered once (sanity: every target answers 200).
for url in "http://127.0.0.1:$UP/api/orders" "http://127.0.0.1:$NGX/api/orders" "http://127.0.0.1:$FL/api/orders"; do
  curl -fsS -o /dev/null "$url"; done
curl -fsS -o /dev/null -H "Cookie: $COOKIE1K" "http://127.0.0.1:$TH/api/orders"
curl -fsS -o /dev/null -H "Cookie: $COOKIE16K" "http://127.0.0.1:$TH/api/orders"
RSS_IDLE_TH=$(rss "$THPID"); RSS_IDLE_FL=$(rss "$FLPID")

cpu_ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# url pids connections [cookie] -> req/s p99(ms) cpu-µs-per-request
throughput() {
  local c0 c1 out; c0=$(cpu_ticks "$2")
  out=$(wrk -t2 -c"$3" -d"${SECS}s" --latency ${4:+-H "Cookie: $4"} "$1"); c1=$(cpu_ticks "$2")
  awk -v ticks=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" '
    function ms(v) { return v ~ /us$/ ? v / 1000 : v ~ /ms$/ ? v + 0 : v * 1000 }
    /requests in/ {n=$1} /Requests\/sec/ {rps=$2} $1=="99%" {p99=ms($2)}
    /Non-2xx|Socket errors: connect [1-9]|read [1-9]|write [1-9]|timeout [1-9]/ {err=$0}
    END {if (err) {print "errors: " err > "/dev/stderr"; exit 1}
         printf "%d %.2f %.1f\n", rps, p99, ticks / hz * 1e6 / n}' <<<"$out"
}
# 1,000 requests/s, evenly: two hey clients at 500 req/s each. -> p50 p99 (ms)
fixed_rate() { # url [cookie]
  local out; out=$(hey -z "${SECS}s" -c 2 -q 500 ${2:+-H "Cookie: $2"} "$1")
  awk '/50% in/ {p50=$3*1000} /99% in/ {p99=$3*1000} /Status code distribution|Error distribution/ {codes=1}
       codes && /\[200\]/ {ok=$2} codes && /\[[0-9]+\]/ && !/\[200\]/ {bad=1}
       END {if (bad || ok == 0) {print "non-200 answers" > "/dev/stderr"; exit 1}; printf "%.2f %.2f\n", p50, p99}' <<<"$out"
}

declare -A R
targets=(f f1 f16 n t1 t16)
url() { case $1 in f|f1|f16) echo "http://127.0.0.1:$FL/api/orders";; n) echo "http://127.0.0.1:$NGX/api/orders";;
  *) echo "http://127.0.0.1:$TH/api/orders";; esac; }
pids() { case $1 in f|f1|f16) echo "$FLPID";; n) echo "$NGX_WORKERS";; *) echo "$THPID";; esac; }
cookie() { case $1 in t1|f1) echo "$COOKIE1K";; t16|f16) echo "$COOKIE16K";; *) echo "";; esac; }
for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  # Alternate the order, so no target always runs right after the same one.
  order=("${targets[@]}"); [ $((round % 2)) -eq 0 ] && order=(t16 t1 n f16 f1 f)
  for c in 32 256; do
    for t in "${order[@]}"; do R[$t$c,$round]=$(throughput "$(url $t)" "$(pids $t)" $c "$(cookie $t)"); done
  done
  for t in f n t1; do R[${t}r,$round]=$(fixed_rate "$(url $t)" "$(cookie $t)"); done
done
median() { # key column -> median over the rounds
  for round in $(seq "$ROUNDS"); do awk -v c="$2" '{print $c}' <<<"${R[$1,$round]}"; done |
    sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

# The connection sweep, floor and token-handler (1 KB) in turn: req/s, p99 and RSS mid-run.
sweep() { # target connections -> req/s p99 rss-KiB
  local t=$1 c=$2 out pid; pid=$(pids "$t")
  wrk -t2 -c"$c" -d"${SECS}s" --latency ${3:+-H "Cookie: $3"} "$(url "$t")" > "$TMP/sweep.txt" & local w=$!
  sleep $((SECS / 2)); local rss_mid; rss_mid=$(rss "$pid"); wait "$w"
  awk -v rss="$rss_mid" 'function ms(v) { return v ~ /us$/ ? v / 1000 : v ~ /ms$/ ? v + 0 : v * 1000 }
    /Requests\/sec/ {rps=$2} $1=="99%" {p99=ms($2)} /Non-2xx/ {bad=$0}
    END {printf "%d %.2f %d %s\n", rps, p99, rss, bad ? "(non-2xx)" : ""}' "$TMP/sweep.txt"
}
declare -A S
for c in 32 256 1024 4096; do
  echo "sweep $c connections" >&2
  S[f$c]=$(sweep f $c); S[t$c]=$(sweep t1 $c "$COOKIE1K")
done
RSS_PEAK_TH=$(awk '/VmHWM/ {print $2}' "/proc/$THPID/status")

STORM="(skipped: NO_STORM=1)"; LOGIN="(skipped: NO_STORM=1)"
if [ -z "${NO_STORM:-}" ]; then
  [ -d tests/oidc/node_modules/oidc-provider ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
  echo "refresh storm and login cost (release test build)" >&2
  OUT=$(STORM_SESSIONS=${STORM_SESSIONS:-1000} RUST_LOG=error cargo test --release --quiet --test api storm:: \
    -- --ignored --nocapture --test-threads=1 2>&1) || { echo "$OUT" >&2; exit 1; }
  STORM=$(grep '^storm:' <<<"$OUT" | sed 's/^storm: //'); LOGIN=$(grep '^login:' <<<"$OUT" | sed 's/^login: //')
fi

kib() { python3 -c "print(f'{$1 / 1024:.1f} MiB')"; }
row() { # label key
  echo "| $1 | $(median "${2}32" 1) | $(median "${2}32" 3) µs | $(median "${2}32" 2) ms | $(median "${2}256" 1) | $(median "${2}256" 3) µs | $(median "${2}256" 2) ms | $3 |"
}
cat <<REPORT
Command: \`scripts/bench-proxy.sh $SECS $ROUNDS\` ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $WORKERS workers for each proxy; medians of $ROUNDS rounds; wrk -t2, the upstream and the proxy share the cores)

| target | req/s, 32 conns | CPU per request, 32 | p99, 32 | req/s, 256 conns | CPU per request, 256 | p99, 256 | p50 / p99 at 1,000 req/s evenly |
| --- | --- | --- | --- | --- | --- | --- | --- |
$(row "floor (actix-web + awc pass-through)" f "$(median fr 1) / $(median fr 2) ms")
$(row "floor, same 1 KB Cookie header passed through" f1 "n/a")
$(row "floor, same 16 KB Cookie header passed through" f16 "n/a")
$(row "nginx proxy_pass" n "$(median nr 1) / $(median nr 2) ms")
$(row "token-handler, 1 KB JWT" t1 "$(median t1r 1) / $(median t1r 2) ms")
$(row "token-handler, 16 KB token ($CHUNKS16K cookies)" t16 "n/a")

| ratio to the floor | 32 conns | 256 conns | target |
| --- | --- | --- | --- |
| token-handler 1 KB, CPU per request | $(ratio "$(median t132 3)" "$(median f32 3)")× | $(ratio "$(median t1256 3)" "$(median f256 3)")× | ≤ 1.15× |
| token-handler 1 KB against the floor carrying the same Cookie header | $(ratio "$(median t132 3)" "$(median f132 3)")× | $(ratio "$(median t1256 3)" "$(median f1256 3)")× | |
| token-handler 1 KB, req/s | $(ratio "$(median t132 1)" "$(median f32 1)")× | $(ratio "$(median t1256 1)" "$(median f256 1)")× | ≥ 0.85× |
| token-handler 16 KB, CPU per request | $(ratio "$(median t1632 3)" "$(median f32 3)")× | $(ratio "$(median t16256 3)" "$(median f256 3)")× | ≤ 1.5× |
| token-handler 16 KB against the floor carrying the same Cookie header | $(ratio "$(median t1632 3)" "$(median f1632 3)")× | $(ratio "$(median t16256 3)" "$(median f16256 3)")× | |
| nginx, CPU per request | $(ratio "$(median n32 3)" "$(median f32 3)")× | $(ratio "$(median n256 3)" "$(median f256 3)")× | (reference) |

p99 at 1,000 req/s evenly: token-handler $(median t1r 2) ms, floor $(median fr 2) ms (target: at most the floor's + 0.2 ms).

| connections (keep-alive, wrk -t2) | floor req/s | floor p99 | floor RSS | token-handler req/s | token-handler p99 | token-handler RSS |
| --- | --- | --- | --- | --- | --- | --- |
$(for c in 32 256 1024 4096; do read -r fr fp frss _ <<<"${S[f$c]}"; read -r tr tp trss tbad <<<"${S[t$c]}";
  echo "| $c | $fr | $fp ms | $(kib "$frss") | $tr $tbad | $tp ms | $(kib "$trss") |"; done)

RSS idle: token-handler $(kib "$RSS_IDLE_TH"), floor $(kib "$RSS_IDLE_FL"); token-handler's peak over the whole run $(kib "$RSS_PEAK_TH") (targets: 20 MB idle, 64 MB at 4,096 connections).

Refresh storm: $STORM

Login cost: $LOGIN
REPORT
