#!/usr/bin/env python3
"""Stand-in replicas and the client for examples/nginx-lb/test.sh.

    stand_in.py serve NAME PORT   a replica on 127.0.0.1:PORT that answers like token-handler
                                  where the nginx configuration matters (see Replica)
    stand_in.py client HTTPS_PORT HTTP_PORT [--expect-502 | --expect-buffered]
                                  requests through nginx; exits non-zero on the first failure

Loopback only; every socket has a timeout; the client stops by itself.
"""

import base64
import hashlib
import json
import socket
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "www.example.com"

# token-handler's login answer: th-at, th-auth (one per path), th-id (two paths), th-csrf, and
# the cleared th-login. About 6 KB of Set-Cookie headers in all.
LOGIN_COOKIES = [
    (f"th-{name}", size, path)
    for name, size, path in [
        ("at", 1300, "/"),
        ("auth", 900, "/oauth-agent/refresh"),
        ("auth", 900, "/oauth-agent/logout"),
        ("auth", 900, "/api"),
        ("id", 1000, "/oauth-agent/claims"),
        ("id", 1000, "/oauth-agent/logout"),
        ("csrf", 120, "/"),
    ]
]


class Replica(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = "?"
    server_version = "stand-in"

    def log_message(self, *args):
        pass

    def _echo(self, status=200, extra_headers=()):
        body = json.dumps({
            "replica": self.name,
            "method": self.command,
            "path": self.path,
            "peer": list(self.client_address),
            "host": self.headers.get("Host"),
            "xff": self.headers.get("X-Forwarded-For"),
            "xfp": self.headers.get("X-Forwarded-Proto"),
            "xfh": self.headers.get("X-Forwarded-Host"),
            "connection": self.headers.get("Connection"),
            "request_id": self.headers.get("X-Request-Id"),
            "cookie_len": len(self.headers.get("Cookie", "")),
        }).encode()
        self.send_response(status)
        for k, v in extra_headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break

    def do_POST(self):
        self._read_body()
        if self.path == "/oauth-agent/login/end":
            cookies = [
                ("Set-Cookie", f"{n}={'A' * size}; Path={p}; HttpOnly; Secure; SameSite=Strict")
                for n, size, p in LOGIN_COOKIES
            ]
            cookies.append(("Set-Cookie", "th-login=; Path=/oauth-agent/login; Max-Age=0"))
            return self._echo(extra_headers=cookies)
        return self._echo()

    def do_GET(self):
        if self.path == "/api/events":
            # Server-sent events: the first event now, the second 1.5 s later.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"data: one\n\n")
            self.wfile.flush()
            time.sleep(1.5)
            self.wfile.write(b"data: two\n\n")
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path == "/api/ws":
            up = self.headers.get("Upgrade", "").lower()
            conn = self.headers.get("Connection", "").lower()
            if up != "websocket" or "upgrade" not in conn:
                return self._echo(status=400)
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1(
                (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            # After the upgrade nginx relays bytes both ways; echo whatever comes.
            self.connection.settimeout(5)
            try:
                data = self.connection.recv(1024)
                self.connection.sendall(data)
            except OSError:
                pass
            self.close_connection = True
            return
        return self._echo()


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # nginx resets the connection after a header it refuses (the 502 control): expected.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


def serve(name, port):
    Replica.name = name
    Server(("127.0.0.1", int(port)), Replica).serve_forever()


# ----------------------------------------------------------------------------------------------

def tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def request(port, method, path, headers=(), body=None, use_tls=True):
    """One HTTP/1.1 request on its own connection; returns (status, [(name, value)], body)."""
    import http.client
    cls = http.client.HTTPSConnection if use_tls else http.client.HTTPConnection
    kw = {"context": tls()} if use_tls else {}
    conn = cls("127.0.0.1", port, timeout=10, **kw)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", HOST)
    for k, v in headers:
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.getheaders(), data


failed = False


def check(cond, what):
    global failed
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failed = True


def sse(https_port):
    """Reads /api/events; returns (seconds to the first event, seconds to the end, complete)."""
    s = tls().wrap_socket(socket.create_connection(("127.0.0.1", https_port), timeout=10),
                          server_hostname=HOST)
    start = time.monotonic()
    s.sendall(f"GET /api/events HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n"
              .encode())
    got, first_at = b"", None
    while b"data: two" not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
        if first_at is None and b"data: one" in got:
            first_at = time.monotonic() - start
    total = time.monotonic() - start
    s.close()
    return first_at, total, b"data: two" in got


def client(https_port, http_port, expect_502=False, expect_buffered=False):
    https_port, http_port = int(https_port), int(http_port)
    origin = ("Origin", f"https://{HOST}")

    if expect_buffered:
        first_at, _, _ = sse(https_port)
        check(first_at is not None and first_at >= 1.0,
              f"with proxy_buffering on, the first event waits for the second: {first_at} s")
        return 1 if failed else 0

    if expect_502:
        status, _, _ = request(https_port, "POST", "/oauth-agent/login/end", [origin], b"{}")
        check(status == 502, f"without the proxy buffer lines, the login answer is a 502 ({status})")
        return 1 if failed else 0

    # Round robin over the three replicas, with keep-alive connections to them.
    hits, peers = {}, {}
    for i in range(12):
        status, _, data = request(https_port, "GET", f"/api/orders/{i}", [origin])
        j = json.loads(data)
        hits[j["replica"]] = hits.get(j["replica"], 0) + 1
        peers.setdefault(j["replica"], set()).add(tuple(j["peer"]))
        if i == 0:
            check(status == 200, f"GET /api/orders/0 through nginx: {status}")
            check(j["connection"] is None,
                  f"no Connection header towards the replica (keep-alive): {j['connection']!r}")
    print(f"      requests per replica: {dict(sorted(hits.items()))}")
    print("      upstream connections per replica: "
          f"{ {k: len(v) for k, v in sorted(peers.items())} }")
    check(sorted(hits) == ["r1", "r2", "r3"] and all(n == 4 for n in hits.values()),
          "round robin: 12 requests, 4 to each replica")
    check(all(len(p) < 4 for p in peers.values()),
          "connections to the replicas are reused (fewer connections than requests)")

    # The login answer's ~6.5 KB of Set-Cookie headers.
    status, headers, data = request(https_port, "POST", "/oauth-agent/login/end",
                                    [origin, ("Content-Type", "application/json")], b"{}")
    set_cookies = [v for k, v in headers if k.lower() == "set-cookie"]
    size = sum(len(v) + len("Set-Cookie: \r\n") for v in set_cookies)
    check(status == 200 and len(set_cookies) == len(LOGIN_COOKIES) + 1,
          f"login answer with {len(set_cookies)} Set-Cookie headers, {size} bytes: {status}")

    # A big Cookie header from the browser (one 20 KB header line).
    status, _, data = request(https_port, "GET", "/api/big",
                              [("Cookie", "th-at=" + "B" * 20000)])
    check(status == 200 and json.loads(data)["cookie_len"] > 20000,
          f"a 20 KB Cookie header reaches the replica: {status}")

    # Client-sent X-Forwarded-* are replaced by nginx's own.
    status, _, data = request(https_port, "GET", "/api/whoami", [
        ("X-Forwarded-For", "203.0.113.66"), ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "evil.example"), ("X-Request-Id", "client-chosen")])
    j = json.loads(data)
    check(j["xff"] == "127.0.0.1" and j["xfp"] == "https" and j["xfh"] == HOST
          and j["host"] == HOST,
          f"X-Forwarded-For/Proto/Host set by nginx, client values dropped: "
          f"{j['xff']}, {j['xfp']}, {j['xfh']}; Host {j['host']}")
    rid = j["request_id"] or ""
    check(len(rid) == 32 and all(ch in "0123456789abcdef" for ch in rid),
          f"X-Request-Id from nginx: {rid!r}")

    # Server-sent events arrive as they are sent (proxy_buffering off).
    first_at, total, complete = sse(https_port)
    check(first_at is not None and first_at < 1.0 and complete,
          f"SSE: first event after {first_at if first_at is None else round(first_at, 2)} s, "
          f"stream ended after {round(total, 2)} s (second event sent at 1.5 s)")

    # WebSocket upgrade (HTTP/1.1 with Upgrade; bytes relayed both ways afterwards).
    s = tls().wrap_socket(socket.create_connection(("127.0.0.1", https_port), timeout=10),
                          server_hostname=HOST)
    key = base64.b64encode(b"0123456789abcdef").decode()
    s.sendall((f"GET /api/ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nOrigin: https://{HOST}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    s.sendall(b"ping-through-nginx")
    echoed = b""
    try:
        while len(echoed) < len(b"ping-through-nginx"):
            chunk = s.recv(4096)
            if not chunk:
                break
            echoed += chunk
    except OSError:
        pass
    s.close()
    status_line = head.split(b"\r\n", 1)[0].decode()
    check(head.startswith(b"HTTP/1.1 101") and echoed == b"ping-through-nginx",
          f"WebSocket upgrade: {status_line!r}, echoed {echoed!r}")

    # Plain http is redirected to https.
    status, headers, _ = request(http_port, "GET", "/oauth-agent/userInfo", use_tls=False)
    loc = dict((k.lower(), v) for k, v in headers).get("location")
    check(status == 308 and loc == f"https://{HOST}/oauth-agent/userInfo",
          f"http redirects to https: {status} {loc}")

    # The SPA itself, and no token-handler health endpoint exposed to the Internet.
    status, _, data = request(https_port, "GET", "/some/spa/route")
    check(status == 200 and b"spa index" in data, f"SPA route falls back to index.html: {status}")
    status, _, data = request(https_port, "GET", "/health/ready")
    check(b"replica" not in data, "/health/ready is not proxied to the replicas")

    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit(client(sys.argv[2], sys.argv[3], "--expect-502" in sys.argv,
                        "--expect-buffered" in sys.argv))
