"""Starts django-oidc-provider as an OpenID Provider on loopback for the token-handler tests.

Environment: PORT (0: any free port), DATA_DIR (a directory for the SQLite database; the caller
removes it), MAX_LIFETIME_SECONDS (default 300). Prints one JSON line, {"issuer": ...}, once it
accepts connections. Exits when its standard input closes (the test process is gone) or when its
lifetime is over, so a crashed test run leaves nothing behind.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from common import rsa_private_key_pem, serve, setup_django  # noqa: E402

SPA = "https://www.example.test/"

# The clients the tests use, one per client authentication method django-oidc-provider supports
# (client_secret_basic, client_secret_post, a public client; it has no private_key_jwt) and one
# whose ID tokens are signed with HS256 and its secret. django-oidc-provider does not send `iss`
# in the authorization response (RFC 9207), so each has a redirect URI of its own. Consent:
# `post-client` requires it; a public client always shows it; the others skip it.
CLIENTS = [
    {"client_id": "basic-client", "client_secret": "basic-secret"},
    {"client_id": "post-client", "client_secret": "post-secret", "require_consent": True},
    {"client_id": "public-client", "client_type": "public"},
    {"client_id": "hs-client", "client_secret": "hs-secret-of-at-least-32-bytes-long!", "jwt_alg": "HS256"},
]
# Introspects the others' tokens (RFC 7662) for the tests' resource server: django-oidc-provider
# answers only a client whose scope holds `token_introspection` and the token's audience.
INTROSPECTOR = {
    "client_id": "introspector",
    "client_secret": "introspector-secret",
    "scope": ["token_introspection"] + [c["client_id"] for c in CLIENTS],
}


def register():
    from oidc_provider.models import Client, ResponseType, RSAKey

    RSAKey.objects.create(key=rsa_private_key_pem(pkcs8=False))
    code, _ = ResponseType.objects.get_or_create(
        value="code", defaults={"description": "code (Authorization Code Flow)"}
    )
    for c in CLIENTS + [INTROSPECTOR]:
        name = c["client_id"].split("-")[0]
        client = Client(
            name=c["client_id"],
            client_id=c["client_id"],
            client_secret=c.get("client_secret", ""),
            client_type=c.get("client_type", "confidential"),
            jwt_alg=c.get("jwt_alg", "RS256"),
            require_consent=c.get("require_consent", False),
            reuse_consent=False,
        )
        client.redirect_uris = [SPA + name]
        client.post_logout_redirect_uris = [SPA + name]
        client.scope = c.get("scope", [])
        client.save()
        client.response_types.add(code)


def main():
    setup_django()
    register()
    serve("/openid")


if __name__ == "__main__":
    main()
