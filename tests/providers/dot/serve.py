"""Starts django-oauth-toolkit as an OpenID Provider on loopback for the token-handler tests.

Environment: PORT (0: any free port), DOT_DIR (a directory for the SQLite database; the caller
removes it), DOT_CONFIG (JSON, optional: {"clients": [...]} replaces the default clients),
MAX_LIFETIME_SECONDS (default 300), DOT_OIDC=off (plain OAuth 2.0: no OpenID discovery, ID
tokens or userinfo; RFC 8414 metadata only), DOT_CONTENT_LENGTH=off (answers without Content-Length,
their bodies ended by closing the connection). Prints one JSON line, {"issuer": ...}, once it accepts
connections. Exits when its standard input closes (the test process is gone) or when its
lifetime is over, so a crashed test run leaves nothing behind.
"""

import json
import os
import secrets
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

REDIRECT_URI = "https://www.example.test/"

# The clients the tests use: one per client authentication method django-oauth-toolkit
# supports (it has no private_key_jwt). `post-client` shows the consent page; the others are
# pre-approved.
DEFAULT_CLIENTS = [
    {"client_id": "basic-client", "client_secret": "basic-secret", "skip_authorization": True},
    {"client_id": "post-client", "client_secret": "post-secret", "skip_authorization": False},
    {"client_id": "public-client", "client_type": "public", "skip_authorization": True},
]


def rsa_private_key_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def register(clients, settings):
    from oauth2_provider.models import Application

    for c in clients:
        Application.objects.create(
            name=c["client_id"],
            client_id=c["client_id"],
            client_secret=c.get("client_secret", ""),
            client_type=c.get("client_type", Application.CLIENT_CONFIDENTIAL),
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=" ".join(c.get("redirect_uris", [REDIRECT_URI])),
            post_logout_redirect_uris=" ".join(c.get("post_logout_redirect_uris", [REDIRECT_URI])),
            skip_authorization=c.get("skip_authorization", True),
            algorithm=Application.RS256_ALGORITHM if settings.OIDC else Application.NO_ALGORITHM,
        )


def main():
    config = json.loads(os.environ.get("DOT_CONFIG") or "{}")
    directory = os.environ["DOT_DIR"]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="settings",
        DOT_DATABASE=os.path.join(directory, "db.sqlite3"),
        DOT_SECRET_KEY=secrets.token_urlsafe(32),
        DOT_RSA_KEY=rsa_private_key_pem(),
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    import settings

    register(config.get("clients", DEFAULT_CLIENTS), settings)

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
    print(json.dumps({"issuer": f"http://127.0.0.1:{port}/o"}), flush=True)
    time.sleep(int(os.environ.get("MAX_LIFETIME_SECONDS", "300")))
    os._exit(0)


if __name__ == "__main__":
    main()
