"""Django settings of the test provider: django-oauth-toolkit with OpenID Connect, for the
token-handler integration tests only (see serve.py). Every secret comes from serve.py, fresh
for each start."""

import os

from common_settings import *  # noqa: F403

INSTALLED_APPS += ["oauth2_provider"]  # noqa: F405
if os.environ.get("DOT_CONTENT_LENGTH") == "off":
    # What Django's server does without it (the close-delimited body test in tests/api/dot.rs).
    MIDDLEWARE.remove("django.middleware.common.CommonMiddleware")  # noqa: F405

# DOT_OIDC=off: a plain OAuth 2.0 server (no OpenID discovery, no ID tokens, no userinfo).
OIDC = os.environ.get("DOT_OIDC") != "off"
OAUTH2_PROVIDER = {
    "OIDC_ENABLED": OIDC,
    "OIDC_RSA_PRIVATE_KEY": os.environ["DOT_RSA_KEY"],
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    # With a valid id_token_hint, log out without a confirmation page.
    "OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT": False,
    # RFC 9207: `iss` in the authorization response.
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "PKCE_REQUIRED": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": 300,
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "Your profile",
        "email": "Your email address",
    }
    if OIDC
    else {"read": "Read your orders"},
    "OAUTH2_VALIDATOR_CLASS": "testhooks.ClaimsValidator",
}
