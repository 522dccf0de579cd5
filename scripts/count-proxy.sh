#!/usr/bin/env bash
# User-space instructions per proxied request, the floor (examples/floor_proxy.rs) against
# token-handler, counted by valgrind's callgrind (issue 17). Unlike CPU time, a count does not
# move with the machine's other load, so a change of a few hundred instructions shows in one
# run; it leaves out the kernel and what cache misses cost, which scripts/bench-proxy.sh and
# scripts/profile-proxy.sh measure. Each proxy runs with one worker under callgrind, gets 3 s of
# requests uncounted (connections, pools and caches warm), then SECS seconds counted (wrk -t1
# -c4, the same sealed session cookie for both). Prints both counts and the functions whose own
# instructions differ most, per request. Every server listens on loopback and is stopped by PID.
# Usage: scripts/count-proxy.sh [seconds, default 6]
# BYTES=16384: the access token's size (default 1000, a ~1 KB JWT); 16384 gives a chunked cookie.
# KEEP=<dir>: keep the callgrind files there (callgrind_annotate reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-6}
BYTES=${BYTES:-1000}
need() { command -v "$1" >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo;
  $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx; need wrk wrk; need valgrind valgrind
# As scripts/bench-proxy.sh builds them: the examples first, then the binary as shipped.
[ -n "${NO_BUILD:-}" ] || { cargo build --release --quiet --example seal_cookie --example floor_proxy &&
  cargo build --release --quiet --bin token-handler; }
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/token-handler
source scripts/bench-common.sh
UP=$(port)
upstream_conf "$TMP/up" "$UP"
nginx -p "$TMP/up" -c "$TMP/up/nginx.conf" -e "$TMP/up/error.log" & PIDS+=($!)
wait_port "$UP"
KEY=$("$BIN" keygen)
COOKIE=$("$TARGET/release/examples/seal_cookie" "$KEY" "$BYTES")

count() { # floor|th -> $TMP/<what>.out (callgrind file) and $TMP/<what>.n (requests counted)
  local what=$1 port pid
  port=$(port)
  if [ "$what" = floor ]; then
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/$what.out" \
      "$TARGET/release/examples/floor_proxy" "127.0.0.1:$port" "http://127.0.0.1:$UP" 1 2>"$TMP/$what.vg" & pid=$!
  else
    th_conf "$TMP/th.toml" "$port" "$UP" 1 "$KEY"
    RUST_LOG=error valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/$what.out" \
      "$BIN" --config "$TMP/th.toml" 2>"$TMP/$what.vg" & pid=$!
  fi
  PIDS+=($pid)
  # Under valgrind a start takes seconds.
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
  local url="http://127.0.0.1:$port/api/orders"
  curl -fsS -o /dev/null -H "Cookie: $COOKIE" "$url"
  wrk -t1 -c4 -d3s -H "Cookie: $COOKIE" "$url" >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  wrk -t1 -c4 -d"${SECS}s" -H "Cookie: $COOKIE" "$url" > "$TMP/$what.wrk"
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  grep -q "Non-2xx" "$TMP/$what.wrk" && { echo "$what answered errors" >&2; exit 1; }
  awk '/requests in/ {print $1}' "$TMP/$what.wrk" > "$TMP/$what.n"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # callgrind numbers its dumps: the one asked for above is .1.
  callgrind_annotate --threshold=100 --inclusive=no --tree=none --auto=no "$TMP/$what.out.1" > "$TMP/$what.txt" 2>/dev/null
}
count floor
count th
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$TMP"/floor.out.1 "$TMP"/th.out.1 "$KEEP"/

echo "Command: scripts/count-proxy.sh $SECS   (BYTES=$BYTES; $(date -u +%Y-%m-%dT%H:%MZ); $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo
python3 - "$TMP/floor.txt" "$(cat "$TMP/floor.n")" "$TMP/th.txt" "$(cat "$TMP/th.n")" <<'PY'
import re, sys
def load(path, n):
    per = {}
    for line in open(path):
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r" \[[^\]]*\]$", "", m.group(2)).split(":", 1)[-1]
        per[name] = per.get(name, 0) + int(m.group(1).replace(",", "")) / n
    return per
floor, th = load(sys.argv[1], float(sys.argv[2])), load(sys.argv[3], float(sys.argv[4]))
f, t = sum(floor.values()), sum(th.values())
print("| proxy | requests counted | user-space instructions per request |")
print("| --- | --- | --- |")
print(f"| floor | {sys.argv[2]} | {f:,.0f} |")
print(f"| token-handler | {sys.argv[4]} | {t:,.0f} ({t / f:.2f}×, {t - f:+,.0f}) |")
print()
print("Largest differences, own instructions per request (token-handler − floor):")
print()
print("| difference | floor | token-handler | function |")
print("| --- | --- | --- | --- |")
for k in sorted(set(floor) | set(th), key=lambda k: -(th.get(k, 0) - floor.get(k, 0)))[:25]:
    print(f"| {th.get(k, 0) - floor.get(k, 0):+,.0f} | {floor.get(k, 0):,.0f} | {th.get(k, 0):,.0f} | `{k[:110]}` |")
PY
