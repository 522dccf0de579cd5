"""What both Python test providers' serve.py and testhooks.py share: a fresh RSA key, the
Django setup with a fresh database and secret key, the server loop, and which client
authentication a request used."""

import base64
import json
import os
import secrets
import sys
import threading
import time
from urllib.parse import unquote_plus


def rsa_private_key_pem(pkcs8=True):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def setup_django():
    """Django with the project's settings, a fresh SQLite database in DATA_DIR (the caller
    removes it) and a fresh secret key, migrated."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="settings",
        PROVIDER_DATABASE=os.path.join(os.environ["DATA_DIR"], "db.sqlite3"),
        PROVIDER_SECRET_KEY=secrets.token_urlsafe(32),
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def serve(issuer_path):
    """Serves the project on loopback (PORT, 0: any free port) and prints one JSON line,
    {"issuer": ...}, once it accepts connections. Exits when its standard input closes (the test
    process is gone) or after MAX_LIFETIME_SECONDS (default 300), so a crashed test run leaves
    nothing behind."""
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    server = ThreadedWSGIServer(("127.0.0.1", int(os.environ.get("PORT", "0"))), WSGIRequestHandler)
    server.set_app(get_wsgi_application())
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def exit_when_stdin_closes():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(json.dumps({"issuer": f"http://127.0.0.1:{port}{issuer_path}"}), flush=True)
    time.sleep(int(os.environ.get("MAX_LIFETIME_SECONDS", "300")))
    os._exit(0)


def client_auth(request):
    """Which client authentication a token, revocation or introspection request used, and the
    client id it named."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header.startswith("Basic "):
        try:
            decoded = base64.b64decode(header[6:]).decode()
        except ValueError:
            decoded = ""
        return "client_secret_basic", unquote_plus(decoded.split(":", 1)[0])
    if "client_assertion" in request.POST:
        return "private_key_jwt", request.POST.get("client_id", "")
    if "client_secret" in request.POST:
        return "client_secret_post", request.POST.get("client_id", "")
    return "none", request.POST.get("client_id", "")


class TestHooks:
    """What reached the provider, for the tests' read-only endpoints: counters of answered
    requests (/test/stats) and how the last token (or revocation) request authenticated the
    client (/test/last-client-auth). `auth_paths` are the paths whose POSTs authenticate the
    client; `counter_of(path, method, grant_type, status)` names the counter a response adds
    to, or None. `middleware` goes in MIDDLEWARE (through the project's testhooks.py), `stats`
    and `last_client_auth` are views."""

    def __init__(self, counters, auth_paths, counter_of):
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(counters, 0)
        self._last = {}
        self._auth_paths = auth_paths
        self._counter_of = counter_of

    def middleware(self, get_response):
        def handle(request):
            path = request.path
            grant_type = None
            if request.method == "POST" and path in self._auth_paths:
                method, client_id = client_auth(request)
                grant_type = request.POST.get("grant_type")
                with self._lock:
                    self._last.clear()
                    self._last.update(
                        method=method, client_id=client_id, endpoint=path, grant_type=grant_type
                    )
            response = get_response(request)
            key = self._counter_of(path, request.method, grant_type, response.status_code)
            if key:
                with self._lock:
                    self._stats[key] += 1
            return response

        return handle

    def stats(self, request):
        from django.http import JsonResponse

        with self._lock:
            return JsonResponse(dict(self._stats))

    def last_client_auth(self, request):
        from django.http import JsonResponse

        with self._lock:
            return JsonResponse(dict(self._last))
