#!/usr/bin/env bash
# Proxy benchmark: the same upstream reached directly, through plain nginx proxy_pass, and
# through token-handler's proxy with a sealed cookie. Everything runs on loopback on this machine
# and is stopped by PID. Prints a Markdown report for docs/benchmarks.md.
#
# Fairness: the upstream is its own nginx process, so neither proxy shares a process with it,
# and both proxies get the same number of workers (one per core, token-handler's default).
# Besides throughput and latency, the report gives each proxy's CPU time per request (user +
# system, from /proc): the figure that decides throughput when, as here, the load generator,
# the upstream and the proxy share the cores, and the least noisy one.
#
# Usage: scripts/bench-proxy.sh [seconds per run, default 10] [rounds, default 3]
# Each round measures every target once, in turn; the report gives the median of the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
WORKERS=$(nproc)

need() { command -v "$1" >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo;
  $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx; need wrk wrk; need hey hey

cargo build --release --quiet --bin token-handler --example seal_cookie
BIN=target/release/token-handler

source scripts/bench-common.sh
UP=$(port); NGX=$(port); TH=$(port)
upstream_conf "$TMP/up" "$UP"
# Plain nginx proxy_pass in front of it, with as many workers as token-handler.
nginx_conf "$TMP/ngx" "$WORKERS" on "upstream api { server 127.0.0.1:$UP; keepalive 256; }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx -p "$TMP/up" -c "$TMP/up/nginx.conf" -e "$TMP/up/error.log" & PIDS+=($!)
nginx -p "$TMP/ngx" -c "$TMP/ngx/nginx.conf" -e "$TMP/ngx/error.log" & NGXPID=$!; PIDS+=($NGXPID)

KEY=$($BIN keygen)
th_conf "$TMP/th.toml" "$TH" "$UP" "$WORKERS" "$KEY"
RUST_LOG=error $BIN --config "$TMP/th.toml" & THPID=$!; PIDS+=($THPID)
wait_port "$UP"; wait_port "$NGX"; wait_port "$TH"
NGX_WORKERS=$(ps -o pid= --ppid "$NGXPID" | tr -s ' \n' ' ')
COOKIE="__Host-th-at=$(target/release/examples/seal_cookie "$KEY")"

# Sanity: every target answers 200.
for url in "http://127.0.0.1:$UP/api/orders" "http://127.0.0.1:$NGX/api/orders"; do
  curl -fsS -o /dev/null "$url"; done
curl -fsS -o /dev/null -H "Cookie: $COOKIE" "http://127.0.0.1:$TH/api/orders"

cpu_ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
throughput() { # url pids [cookie] -> req/s p50(ms) p99(ms) cpu-µs-per-request
  local c0 c1 out; c0=$(cpu_ticks "$2")
  out=$(wrk -t2 -c64 -d"${SECS}s" --latency ${3:+-H "Cookie: $3"} "$1"); c1=$(cpu_ticks "$2")
  awk -v ticks=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" '
    function ms(v) { return v ~ /us$/ ? v / 1000 : v ~ /ms$/ ? v + 0 : v * 1000 }
    /Requests\/sec/ {rps=$2} $1=="50%" {p50=ms($2)} $1=="99%" {p99=ms($2)}
    /Non-2xx|Socket errors/ {err=1}
    END {if (err) {print "errors" > "/dev/stderr"; exit 1}
         printf "%d %.2f %.2f %.1f\n", rps, p50, p99, ticks / hz * 1e6 / (rps * '"$SECS"')}' <<<"$out"
}
# 1,000 requests/s two ways: hey's 20 workers tick together, so -c20 -q50 arrives in bursts of
# 20 (queueing included); -c2 -q500 arrives evenly (the cost of one request).
fixed_rate() { # clients url [cookie] -> p50 p99 (ms) at 1,000 requests/s
  local out; out=$(hey -z "${SECS}s" -c "$1" -q $((1000 / $1)) ${3:+-H "Cookie: $3"} "$2")
  awk '/50% in/ {p50=$3*1000} /99% in/ {p99=$3*1000} /Status code distribution|Error distribution/ {codes=1}
       codes && /\[200\]/ {ok=$2} codes && /\[[0-9]+\]/ && !/\[200\]/ {bad=1}
       END {if (bad || ok == 0) {print "non-200 answers" > "/dev/stderr"; exit 1}; printf "%.2f %.2f\n", p50, p99}' <<<"$out"
}

declare -A R
for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  R[d,$round]=$(throughput "http://127.0.0.1:$UP/api/orders" "")
  R[n,$round]=$(throughput "http://127.0.0.1:$NGX/api/orders" "$NGX_WORKERS")
  R[t,$round]=$(throughput "http://127.0.0.1:$TH/api/orders" "$THPID" "$COOKIE")
  for c in 20 2; do
    R[df$c,$round]=$(fixed_rate $c "http://127.0.0.1:$UP/api/orders")
    R[nf$c,$round]=$(fixed_rate $c "http://127.0.0.1:$NGX/api/orders")
    R[tf$c,$round]=$(fixed_rate $c "http://127.0.0.1:$TH/api/orders" "$COOKIE")
  done
done
median() { # key column -> median over the rounds
  for round in $(seq "$ROUNDS"); do awk -v c="$2" '{print $c}' <<<"${R[$1,$round]}"; done |
    sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
row() { # label key cpu?
  local cpu="n/a"; [ "$3" = yes ] && cpu="$(median "$2" 4) µs"
  echo "| $1 | $(median "$2" 1) req/s | $(median "$2" 2) / $(median "$2" 3) ms | $cpu | $(median "${2}f20" 1) / $(median "${2}f20" 2) ms | $(median "${2}f2" 1) / $(median "${2}f2" 2) ms |"
}

# Memory at 512 connections.
wrk -t2 -c512 -d"${SECS}s" -H "Cookie: $COOKIE" "http://127.0.0.1:$TH/api/orders" > "$TMP/wrk512.txt" &
WRK=$!; sleep $((SECS / 2))
RSS_MID=$(awk '/VmRSS/ {print $2}' "/proc/$THPID/status")
wait "$WRK"
RSS_HWM=$(awk '/VmHWM/ {print $2}' "/proc/$THPID/status")
RPS512=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk512.txt")
ERR512=$(grep -E "Non-2xx|Socket errors" "$TMP/wrk512.txt" || true)

T_RPS=$(median t 1); N_RPS=$(median n 1)
cat <<REPORT
Command: scripts/bench-proxy.sh $SECS $ROUNDS   ($(date -u +%Y-%m-%d), $(nproc) cores; wrk or hey, the upstream, nginx and token-handler share them; $WORKERS workers for each proxy; median of $ROUNDS rounds)

| target | max throughput (wrk -t2 -c64) | p50 / p99 at max | proxy CPU per request | p50 / p99 at 1,000 req/s in bursts (hey -c20 -q50) | p50 / p99 at 1,000 req/s evenly (hey -c2 -q500) |
| --- | --- | --- | --- | --- | --- |
$(row "upstream directly" d no)
$(row "nginx proxy_pass" n yes)
$(row "token-handler proxy (sealed cookie)" t yes)

Throughput token-handler / nginx: $(python3 -c "print(round($T_RPS / $N_RPS, 2))")
p99 added over nginx at 1,000 req/s: $(python3 -c "print(round($(median tf20 2) - $(median nf20 2), 2))") ms in bursts, $(python3 -c "print(round($(median tf2 2) - $(median nf2 2), 2))") ms evenly
token-handler at 512 connections: $RPS512 req/s, RSS ${RSS_MID} KiB mid-run, peak ${RSS_HWM} KiB. ${ERR512:-No errors.}
REPORT
