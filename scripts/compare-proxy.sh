#!/usr/bin/env bash
# Before/after of a change to the proxy path: two token-handler binaries side by side in front of
# the same upstream, measured in alternating runs (wrk -t2 -c32), each run's CPU per request
# from /proc (user + system over the run / requests served). Prints each run and the medians.
# Usage: scripts/compare-proxy.sh <old binary> <new binary> [seconds, default 5] [rounds, default 5]
# STORE_NEW=1: the new binary runs with a shared store (a redis-server started here on loopback),
# so each proxied request is also checked against the list of ended sessions (issue 16); pass
# the same binary twice to see what the check costs.
# BYTES=16384: the access token's size (default 1000, a ~1 KB JWT); 16384 gives a chunked cookie.
# OLD_SEAL=<seal_cookie binary>: the old binary gets its session sealed by that build of
# examples/seal_cookie (a change to how cookies are sealed is then measured as each version
# would see its own sessions); by default both get the same cookie.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1; NEW=$2; SECS=${3:-5}; ROUNDS=${4:-5}
TARGET=${CARGO_TARGET_DIR:-target}
source scripts/bench-common.sh
UP=$(port); A=$(port); B=$(port)
upstream_conf "$TMP/up" "$UP"
nginx -p "$TMP/up" -c "$TMP/up/nginx.conf" -e "$TMP/up/error.log" & PIDS+=($!)
KEY=$("$NEW" keygen)
th_conf "$TMP/a.toml" "$A" "$UP" "$(nproc)" "$KEY"; th_conf "$TMP/b.toml" "$B" "$UP" "$(nproc)" "$KEY"
if [ -n "${STORE_NEW:-}" ]; then
  R=$(port)
  redis-server --port "$R" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >"$TMP/redis.log" & PIDS+=($!)
  printf '[store]\nurl = "redis://127.0.0.1:%s"\n' "$R" >> "$TMP/b.toml"
  wait_port "$R"
fi
RUST_LOG=error "$OLD" --config "$TMP/a.toml" & APID=$!; PIDS+=($APID)
RUST_LOG=error "$NEW" --config "$TMP/b.toml" & BPID=$!; PIDS+=($BPID)
wait_port "$UP"; wait_port "$A"; wait_port "$B"
BYTES=${BYTES:-1000}
COOKIE=$("$TARGET/release/examples/seal_cookie" "$KEY" "$BYTES")
OLD_COOKIE=$COOKIE
[ -n "${OLD_SEAL:-}" ] && OLD_COOKIE=$("$OLD_SEAL" "$KEY" "$BYTES")
run() { # port pid cookie -> µs per request
  local c0 c1 out; c0=$(awk '{print $14 + $15}' "/proc/$2/stat")
  out=$(wrk -t2 -c32 -d"${SECS}s" -H "Cookie: $3" "http://127.0.0.1:$1/api/orders"); c1=$(awk '{print $14 + $15}' "/proc/$2/stat")
  awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" '/requests in/ {n=$1} /Non-2xx/ {exit 1} END {printf "%.1f\n", t / hz * 1e6 / n}' <<<"$out"
}
o=(); n=()
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then o+=("$(run "$A" "$APID" "$OLD_COOKIE")"); n+=("$(run "$B" "$BPID" "$COOKIE")");
  else n+=("$(run "$B" "$BPID" "$COOKIE")"); o+=("$(run "$A" "$APID" "$OLD_COOKIE")"); fi
  echo "round $r: old ${o[-1]} µs, new ${n[-1]} µs per request" >&2
done
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "CPU per proxied request ($BYTES-byte token, wrk -t2 -c32, median of $ROUNDS alternating runs of ${SECS} s; load average $(cut -d' ' -f1-3 /proc/loadavg)): old $(med "${o[@]}") µs, new $(med "${n[@]}") µs"
