#!/usr/bin/env bash
# Where token-handler's proxy spends its CPU, by layer (kernel, HTTP server, HTTP client,
# runtime, our own code). One worker pinned to CPU 1; the upstream (nginx) and wrk on CPU 0, so
# the profile holds token-handler's work only. Every server listens on loopback and is stopped
# by PID. Needs perf (Debian: linux-perf); hardware counters are not required (cpu-clock).
# Usage: scripts/profile-proxy.sh [seconds, default 6] [target: th (default) | th16k | floor]
# `floor` profiles examples/floor_proxy.rs (the same stack doing nothing but pass-through) the
# same way, so the two tables can be set side by side; `th16k` sends a 16 KB token.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-6}
WHAT=${2:-th}
command -v perf >/dev/null || { echo "perf is required (apt-get install linux-perf)" >&2; exit 1; }
command -v wrk >/dev/null && command -v nginx >/dev/null ||
  { echo "wrk and nginx are required (scripts/bench-proxy.sh installs them)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs two CPUs" >&2; exit 1; }

# Release code with line tables, in its own target directory so the normal build is untouched.
# PROFILE_TARGET_DIR and PROFILE_DEBUG=0 reuse an existing release build instead (symbols
# only, no line tables: a busy machine then profiles without a second full build).
export CARGO_TARGET_DIR=${PROFILE_TARGET_DIR:-target/profile} CARGO_PROFILE_RELEASE_DEBUG=${PROFILE_DEBUG:-1}
# The examples first, then the binary on its own, so it is built with the features it ships
# with (scripts/bench-proxy.sh says why).
cargo build --release --quiet --example seal_cookie --example floor_proxy
cargo build --release --quiet --bin token-handler
BIN=$CARGO_TARGET_DIR/release/token-handler

source scripts/bench-common.sh
UP=$(port); TH=$(port)
upstream_conf "$TMP/up" "$UP"
taskset -c 0 nginx -p "$TMP/up" -c "$TMP/up/nginx.conf" -e "$TMP/up/error.log" & PIDS+=($!)
KEY=$($BIN keygen)
th_conf "$TMP/th.toml" "$TH" "$UP" 1 "$KEY"
if [ "$WHAT" = floor ]; then
  taskset -c 1 "$CARGO_TARGET_DIR/release/examples/floor_proxy" "127.0.0.1:$TH" "http://127.0.0.1:$UP" 1 & THPID=$!
else
  RUST_LOG=error taskset -c 1 "$BIN" --config "$TMP/th.toml" & THPID=$!
fi
PIDS+=($THPID)
wait_port "$UP"; wait_port "$TH"
BYTES=1000; [ "$WHAT" = th16k ] && BYTES=16384
COOKIE=$("$CARGO_TARGET_DIR/release/examples/seal_cookie" "$KEY" "$BYTES")
curl -fsS -o /dev/null -H "Cookie: $COOKIE" "http://127.0.0.1:$TH/api/orders"

taskset -c 0 wrk -t1 -c32 -d"$((SECS + 3))s" -H "Cookie: $COOKIE" "http://127.0.0.1:$TH/api/orders" > "$TMP/wrk.txt" &
WRK=$!; PIDS+=($WRK); sleep 1
perf record -q -F 499 --call-graph dwarf,16384 -e cpu-clock -p "$THPID" -o "$TMP/perf.data" -- sleep "$SECS" 2>/dev/null
wait "$WRK"
perf script -i "$TMP/perf.data" 2>/dev/null > "$TMP/stacks.txt"
[ -n "${KEEP_PERF:-}" ] && cp "$TMP/perf.data" "$KEEP_PERF"

echo "Command: scripts/profile-proxy.sh $SECS $WHAT   ($(date -u +%Y-%m-%d); $(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.txt") req/s during the profile)"
echo
# Each sample goes to the innermost frame that belongs to a known layer; allocator and memcpy
# frames thus count for whoever called them.
python3 - "$TMP/stacks.txt" <<'PY'
import collections, re, sys
layers = [
    ("unsealing (base64, AES-GCM, JSON)", ("token_handler::crypto",)),
    ("our code: cookies (finding ours in the Cookie header)", ("token_handler::cookies",)),
    ("our code: telemetry and metrics", ("token_handler::telemetry", "token_handler::metrics", "prometheus_client", "tracing")),
    ("our code: proxy (routing, header rules, forwarding)", ("token_handler::proxy",)),
    ("our code: everything else (Origin, CSRF, session, refresh check)", ("token_handler::",)),
    ("HTTP client (awc)", ("awc::",)),
    ("HTTP server (actix-http, actix-web, actix-server)", ("actix_http::", "actix_web::", "actix_server::", "actix_service", "actix_utils")),
    ("async runtime (tokio, mio)", ("tokio::", "mio::", "actix_rt")),
]
count, total = collections.Counter(), 0
for sample in open(sys.argv[1]).read().split("\n\n"):
    frames = [l.strip() for l in sample.split("\n")[1:] if l.strip()]
    if not frames:
        continue
    total += 1
    if "[kernel.kallsyms]" in frames[0]:
        count["kernel (TCP on loopback, syscalls, scheduling)"] += 1
        continue
    names = [re.sub(r"^[0-9a-f]+ ", "", f).rsplit(" (", 1)[0].lstrip("<") for f in frames]
    for name in names:
        layer = next((l for l, prefixes in layers if name.startswith(prefixes)), None)
        if layer:
            count[layer] += 1
            break
    else:
        count["unattributed"] += 1
print(f"| part | share of token-handler's CPU ({total} samples) |")
print("| --- | --- |")
for layer, n in count.most_common():
    print(f"| {layer} | {100 * n / total:.1f}% |")
PY
