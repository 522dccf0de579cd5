"""Django settings of the test provider: django-oauth-toolkit with OpenID Connect, for the
token-handler integration tests only (see serve.py). Every secret comes from serve.py, fresh
for each start."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))

SECRET_KEY = os.environ["DOT_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
]
MIDDLEWARE = [
    # Sets Content-Length (a new project's default). Without it, Django's server ends each body
    # by closing the connection, which token-handler's HTTP client cannot read (docs/providers.md).
    "django.middleware.common.CommonMiddleware",
    "testhooks.TestHooksMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
if os.environ.get("DOT_CONTENT_LENGTH") == "off":
    # What Django's server does without it (the close-delimited body test in tests/api/dot.rs).
    MIDDLEWARE.remove("django.middleware.common.CommonMiddleware")
ROOT_URLCONF = "urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [os.path.join(HERE, "templates")],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["DOT_DATABASE"],
    }
}
# Any user name signs in with any password (as in the oidc-provider test provider).
AUTHENTICATION_BACKENDS = ["testhooks.AnyPasswordBackend"]
# Client secrets are hashed as in production, with Django's fast test hasher: the default
# PBKDF2 costs about a second of CPU per token request.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "/accounts/login/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    # One line per request is noise in the test output; errors still show.
    "loggers": {"django.server": {"level": "ERROR"}, "django.request": {"level": "ERROR"}},
}

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
