#!/usr/bin/env bash
# Proxy benchmark: the same upstream reached directly, through plain nginx proxy_pass, and
# through token-handler's proxy with a sealed cookie. Everything runs on loopback on this machine
# and is stopped by PID. Prints a Markdown table for docs/benchmarks.md.
# Usage: scripts/bench-proxy.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}

need() { command -v "$1" >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo;
  $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx; need wrk wrk; need hey hey

cargo build --release --quiet --bin token-handler --example seal_cookie
BIN=target/release/token-handler

TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

UP=$(port); NGX=$(port); TH=$(port)
mkdir -p "$TMP/ngx"
cat > "$TMP/ngx/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1; pid $TMP/ngx/nginx.pid;
error_log $TMP/ngx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/ngx/b; proxy_temp_path $TMP/ngx/p; fastcgi_temp_path $TMP/ngx/f;
  uwsgi_temp_path $TMP/ngx/u; scgi_temp_path $TMP/ngx/s;
  keepalive_requests 100000;
  upstream api { server 127.0.0.1:$UP; keepalive 256; }
  # The upstream: a small JSON answer.
  server { listen 127.0.0.1:$UP; location / { default_type application/json; return 200 '{"orders":[1,2,3]}'; } }
  # Plain nginx proxy_pass in front of it.
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
nginx -p "$TMP/ngx" -c "$TMP/ngx/nginx.conf" -e "$TMP/ngx/error.log" & PIDS+=($!)

KEY=$($BIN keygen)
cat > "$TMP/th.toml" <<TOML
[server]
listen = "127.0.0.1:$TH"
[cookies]
keys = ["$KEY"]
[web]
trusted_origins = ["https://www.example.test"]
[[providers]]
id = "default"
issuer = "http://127.0.0.1:1"
client_id = "bench"
client_secret = "bench"
redirect_uri = "https://www.example.test/"
[[routes]]
path = "/api"
upstream = "http://127.0.0.1:$UP"
TOML
RUST_LOG=error $BIN --config "$TMP/th.toml" & THPID=$!; PIDS+=($THPID)
wait_port "$UP"; wait_port "$NGX"; wait_port "$TH"
COOKIE="th-at=$(target/release/examples/seal_cookie "$KEY")"

# Sanity: every target answers 200.
for url in "http://127.0.0.1:$UP/api/orders" "http://127.0.0.1:$NGX/api/orders"; do
  curl -fsS -o /dev/null "$url"; done
curl -fsS -o /dev/null -H "Cookie: $COOKIE" "http://127.0.0.1:$TH/api/orders"

throughput() { # url [cookie]
  local out; out=$(wrk -t2 -c64 -d"${SECS}s" --latency ${2:+-H "Cookie: $2"} "$1")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$rps $p50 $p99"
}
fixed_rate() { # url [cookie] -> p50 p99 at 1,000 requests/s (20 workers x 50/s)
  local out; out=$(hey -z "${SECS}s" -c 20 -q 50 ${2:+-H "Cookie: $2"} "$1")
  local p50 p99 errors
  p50=$(awk '/50%% in/ || /50% in/ {print $3*1000}' <<<"$out"); p99=$(awk '/99% in/ {print $3*1000}' <<<"$out")
  errors=$(awk '/\[200\]/ {ok=$2} /Status code distribution/ {f=1} END {print ok}' <<<"$out")
  echo "$p50 $p99 $errors"
}

read -r D_RPS D_P50 D_P99 <<<"$(throughput "http://127.0.0.1:$UP/api/orders")"
read -r N_RPS N_P50 N_P99 <<<"$(throughput "http://127.0.0.1:$NGX/api/orders")"
read -r T_RPS T_P50 T_P99 <<<"$(throughput "http://127.0.0.1:$TH/api/orders" "$COOKIE")"
read -r DF_P50 DF_P99 DF_OK <<<"$(fixed_rate "http://127.0.0.1:$UP/api/orders")"
read -r NF_P50 NF_P99 NF_OK <<<"$(fixed_rate "http://127.0.0.1:$NGX/api/orders")"
read -r TF_P50 TF_P99 TF_OK <<<"$(fixed_rate "http://127.0.0.1:$TH/api/orders" "$COOKIE")"

# Memory at 512 connections.
wrk -t2 -c512 -d"${SECS}s" -H "Cookie: $COOKIE" "http://127.0.0.1:$TH/api/orders" > "$TMP/wrk512.txt" &
WRK=$!; sleep $((SECS / 2))
RSS_MID=$(awk '/VmRSS/ {print $2}' "/proc/$THPID/status")
wait "$WRK"
RSS_HWM=$(awk '/VmHWM/ {print $2}' "/proc/$THPID/status")
RPS512=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk512.txt")
ERR512=$(grep -E "Non-2xx|Socket errors" "$TMP/wrk512.txt" || true)

cat <<REPORT
Command: scripts/bench-proxy.sh $SECS   ($(date -u +%Y-%m-%d), $(nproc) cores; wrk, hey, nginx and token-handler share them)

| target | max throughput (wrk -t2 -c64) | p50 / p99 at max | p50 / p99 at 1,000 req/s (hey -c20 -q50) |
| --- | --- | --- | --- |
| upstream directly | $D_RPS req/s | $D_P50 / $D_P99 | ${DF_P50} ms / ${DF_P99} ms ($DF_OK x 200) |
| nginx proxy_pass | $N_RPS req/s | $N_P50 / $N_P99 | ${NF_P50} ms / ${NF_P99} ms ($NF_OK x 200) |
| token-handler proxy (sealed cookie) | $T_RPS req/s | $T_P50 / $T_P99 | ${TF_P50} ms / ${TF_P99} ms ($TF_OK x 200) |

token-handler at 512 connections: $RPS512 req/s, RSS ${RSS_MID} KiB mid-run, peak ${RSS_HWM} KiB. ${ERR512:-No errors.}
Ratio token-handler / nginx throughput: $(python3 -c "print(round($T_RPS/$N_RPS, 2))")
REPORT
