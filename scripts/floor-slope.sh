#!/usr/bin/env bash
# What one microsecond of a proxy's own work costs in all on this stack and machine (issue 17):
# the floor (examples/floor_proxy.rs) run several times side by side, each spinning a given
# number of nanoseconds per request (FLOOR_SPIN_NS, a stand-in for work that touches nothing
# else), measured in alternating runs (wrk -t2 -c$CONNS) like scripts/compare-proxy.sh: CPU per
# request from /proc (user + system over the run / requests served). The slope is the work
# itself plus what the kernel and the stack spend because of it.
# Usage: scripts/floor-slope.sh [seconds, default 5] [rounds, default 5] [variants, default
#        "0 2500 5000 10000"]: a number is a spin in ns; `app` is the floor with token-handler's
#        application shape and no spin (FLOOR_SHAPE=app: its middleware layer and the routes
#        registered ahead of the proxy). The first variant is the base the others are read
#        against. Every server listens on loopback and is stopped by PID.
# PIN=1: as scripts/profile-proxy.sh runs, one worker pinned to CPU 1, wrk and the upstream on
# CPU 0 (wrk -t1), so the floor's own CPU is not shared.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}; ROUNDS=${2:-5}; SPINS=${3:-0 2500 5000 10000}; CONNS=${CONNS:-32}
TARGET=${CARGO_TARGET_DIR:-target}
ON0=(); ON1=(); WORKERS=$(nproc); WRK_THREADS=2
if [ -n "${PIN:-}" ]; then ON0=(taskset -c 0); ON1=(taskset -c 1); WORKERS=1; WRK_THREADS=1; fi
command -v wrk >/dev/null && command -v nginx >/dev/null ||
  { echo "wrk and nginx are required (scripts/bench-proxy.sh installs them)" >&2; exit 1; }
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --example floor_proxy
source scripts/bench-common.sh
UP=$(port)
upstream_conf "$TMP/up" "$UP"
${ON0[@]+"${ON0[@]}"} nginx -p "$TMP/up" -c "$TMP/up/nginx.conf" -e "$TMP/up/error.log" & PIDS+=($!)
wait_port "$UP"
declare -A PORT PID
for s in $SPINS; do
  PORT[$s]=$(port); spin=$s; shape=
  [ "$s" = app ] && { spin=0; shape=app; }
  FLOOR_SHAPE=$shape FLOOR_SPIN_NS=$spin ${ON1[@]+"${ON1[@]}"} "$TARGET/release/examples/floor_proxy" \
    "127.0.0.1:${PORT[$s]}" "http://127.0.0.1:$UP" "$WORKERS" & PID[$s]=$!; PIDS+=(${PID[$s]})
  wait_port "${PORT[$s]}"
done
# A ~750-byte cookie, so each request carries a Cookie header as a session's would
# (scripts/bench-proxy.sh's "floor, same 1 KB Cookie header" row passes a real sealed one).
COOKIE="bench=$(head -c 750 /dev/zero | tr '\0' 'a')"
run() { # port pid -> µs per request
  local c0 c1 out; c0=$(awk '{print $14 + $15}' "/proc/$2/stat")
  out=$(${ON0[@]+"${ON0[@]}"} wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" -H "Cookie: $COOKIE" "http://127.0.0.1:$1/api/orders")
  c1=$(awk '{print $14 + $15}' "/proc/$2/stat")
  awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" '/requests in/ {n=$1} /Non-2xx/ {exit 1} END {printf "%.1f\n", t / hz * 1e6 / n}' <<<"$out"
}
declare -A RUNS
for r in $(seq "$ROUNDS"); do
  for s in $SPINS; do
    v=$(run "${PORT[$s]}" "${PID[$s]}"); RUNS[$s]="${RUNS[$s]:-} $v"
    echo "round $r: $s: $v µs per request" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
BASE=$(median <<<"${RUNS[${SPINS%% *}]}")
echo "Command: scripts/floor-slope.sh $SECS $ROUNDS \"$SPINS\"   ($(date -u +%Y-%m-%dT%H:%MZ), wrk -t$WRK_THREADS -c$CONNS, $WORKERS workers${PIN:+ pinned}, load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| floor variant | CPU per request (median) | above the first | per µs of work | × the first |"
echo "| --- | --- | --- | --- | --- |"
for s in $SPINS; do
  m=$(median <<<"${RUNS[$s]}")
  awk -v s="$s" -v m="$m" -v b="$BASE" 'BEGIN {
    d = m - b
    if (s == "app") { label = "token-handler'"'"'s App shape, no work"; per = "n/a" }
    else { w = s / 1000; label = sprintf("%.1f µs of work (spin)", w); per = (w > 0 ? sprintf("%.2f µs", d / w) : "n/a") }
    printf "| %s | %.1f µs | %+.1f µs | %s | %.2f× |\n", label, m, d, per, m / b }'
done
