"""Starts django-oauth-toolkit as an OpenID Provider on loopback for the token-handler tests.

Environment: PORT (0: any free port), DATA_DIR (a directory for the SQLite database; the caller
removes it), DOT_CONFIG (JSON, optional: {"clients": [...]} replaces the default clients),
MAX_LIFETIME_SECONDS (default 300), DOT_OIDC=off (plain OAuth 2.0: no OpenID discovery, ID
tokens or userinfo; RFC 8414 metadata only), DOT_CONTENT_LENGTH=off (answers without Content-Length,
their bodies ended by closing the connection). Prints one JSON line, {"issuer": ...}, once it accepts
connections. Exits when its standard input closes (the test process is gone) or when its
lifetime is over, so a crashed test run leaves nothing behind.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from common import rsa_private_key_pem, serve, setup_django  # noqa: E402

REDIRECT_URI = "https://www.example.test/"

# The clients the tests use: one per client authentication method django-oauth-toolkit
# supports (it has no private_key_jwt). `post-client` shows the consent page; the others are
# pre-approved.
DEFAULT_CLIENTS = [
    {"client_id": "basic-client", "client_secret": "basic-secret", "skip_authorization": True},
    {"client_id": "post-client", "client_secret": "post-secret", "skip_authorization": False},
    {"client_id": "public-client", "client_type": "public", "skip_authorization": True},
]


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
    os.environ["DOT_RSA_KEY"] = rsa_private_key_pem()
    setup_django()
    import settings

    register(config.get("clients", DEFAULT_CLIENTS), settings)
    serve("/o")


if __name__ == "__main__":
    main()
