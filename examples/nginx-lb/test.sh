#!/usr/bin/env bash
# Checks examples/nginx-lb/nginx.conf with a real nginx, on loopback only:
#
#   1. makes a standalone copy: the three replicas become stand-ins on 127.0.0.1, the listen
#      ports free loopback ports, the certificate a fresh self-signed one, the log and web root
#      paths a temporary directory. Every substitution must match, so an edit of nginx.conf that
#      this script no longer understands fails here instead of going untested;
#   2. `nginx -t` on it;
#   3. starts it and sends requests through it (stand_in.py client): round robin over the
#      three, keep-alive to the replicas, a login answer with ~6 KB of Set-Cookie headers, a
#      20 KB Cookie header, X-Forwarded-* replaced, server-sent events unbuffered, a WebSocket
#      upgrade, the http -> https redirect, the SPA fallback;
#   4. controls, so step 3 is known to test those lines: the same copy WITHOUT the
#      proxy_buffer_size/proxy_buffers lines must answer the login with 502 and log "upstream
#      sent too big header", and WITHOUT `proxy_buffering off` must hold the first server-sent
#      event back until the stream ends.
#
# Needs nginx (Debian: apt-get install nginx-light or nginx), openssl and python3.
#   examples/nginx-lb/test.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nginx="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
tmp="$(mktemp -d)"
chmod 755 "$tmp"          # nginx workers run as another user when started by root
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

"$nginx" -v
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r r1 r2 r3 https http https2 http2 https3 http3 < <(free_ports 9)

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=www.example.com" \
  -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
mkdir -p "$tmp/www" && echo "<!doctype html><title>spa index</title>" > "$tmp/www/index.html"
chmod -R a+rX "$tmp/www"

# make_conf OUT HTTPS_PORT HTTP_PORT: the standalone copy.
make_conf() {
  python3 - "$here/nginx.conf" "$1" "$2" "$3" "$tmp" "$r1" "$r2" "$r3" <<'PY'
import sys
src, out, https, http, tmp, r1, r2, r3 = sys.argv[1:]
text = open(src).read()
subs = [
    ("server token-handler-1:8080", f"server 127.0.0.1:{r1}"),
    ("server token-handler-2:8080", f"server 127.0.0.1:{r2}"),
    ("server token-handler-3:8080", f"server 127.0.0.1:{r3}"),
    ("listen 80;", f"listen 127.0.0.1:{http};"),
    ("listen [::]:80;\n", ""),
    ("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"),
    ("listen [::]:443 ssl http2;\n", ""),
    ("/etc/nginx/tls/www.example.com.crt", f"{tmp}/tls.crt"),
    ("/etc/nginx/tls/www.example.com.key", f"{tmp}/tls.key"),
    ("/var/log/nginx/access.log", f"{tmp}/access-{https}.log"),
    ("root /srv/www;", f"root {tmp}/www;"),
]
for old, new in subs:
    if text.count(old) != 1:
        sys.exit(f"nginx.conf: expected `{old.strip()}` exactly once, found {text.count(old)}")
    text = text.replace(old, new)
open(out, "w").write(text)
PY
}
make_conf "$tmp/nginx.conf" "$https" "$http"

echo "== nginx -t"
"$nginx" -t -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/error.log" -g "pid $tmp/nginx.pid;"

echo "== stand-in replicas on 127.0.0.1:$r1, :$r2, :$r3"
python3 "$here/stand_in.py" serve r1 "$r1" & pids+=($!)
python3 "$here/stand_in.py" serve r2 "$r2" & pids+=($!)
python3 "$here/stand_in.py" serve r3 "$r3" & pids+=($!)
wait_port() {
  for _ in $(seq 50); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 0.2)" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}
for p in "$r1" "$r2" "$r3"; do wait_port "$p"; done

echo "== nginx on https://127.0.0.1:$https (and http :$http)"
"$nginx" -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/error.log" -g "daemon off; pid $tmp/nginx.pid;" & pids+=($!)
wait_port "$https"
timeout 60 python3 "$here/stand_in.py" client "$https" "$http"
echo "-- access log (last 3 lines):"
tail -n 3 "$tmp/access-$https.log"

echo "== control: the same file without proxy_buffer_size / proxy_buffers"
make_conf "$tmp/small.conf" "$https2" "$http2"
sed -i -e '/^ *proxy_buffer_size 32k;/d' -e '/^ *proxy_buffers 8 32k;/d' -e '/^ *proxy_busy_buffers_size 64k;/d' "$tmp/small.conf"
! grep -Eq "^ *(proxy_buffer_size|proxy_buffers|proxy_busy_buffers_size) " "$tmp/small.conf" || { echo "control still has proxy_buffer lines" >&2; exit 1; }
"$nginx" -p "$tmp" -c "$tmp/small.conf" -e "$tmp/error-small.log" -g "daemon off; pid $tmp/small.pid;" & pids+=($!)
wait_port "$https2"
timeout 30 python3 "$here/stand_in.py" client "$https2" "$http2" --expect-502
grep -m1 -o "upstream sent too big header[^,]*" "$tmp/error-small.log"

echo "== control: the same file without proxy_buffering off"
make_conf "$tmp/buffered.conf" "$https3" "$http3"
sed -i '/^ *proxy_buffering off;/d' "$tmp/buffered.conf"
! grep -q "proxy_buffering off" "$tmp/buffered.conf" || { echo "control still has proxy_buffering off" >&2; exit 1; }
"$nginx" -p "$tmp" -c "$tmp/buffered.conf" -e "$tmp/error-buffered.log" -g "daemon off; pid $tmp/buffered.pid;" & pids+=($!)
wait_port "$https3"
timeout 30 python3 "$here/stand_in.py" client "$https3" "$http3" --expect-buffered

echo "nginx-lb: all checks passed"
