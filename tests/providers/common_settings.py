"""The Django settings both Python test providers share (tests/providers/dot and .../dop):
each project's settings.py starts with `from common_settings import *`. Every secret comes from
the project's serve.py, fresh for each start; the database path from its environment."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))

SECRET_KEY = os.environ["PROVIDER_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
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
ROOT_URLCONF = "urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The login page (templates/registration/login.html).
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
        "NAME": os.environ["PROVIDER_DATABASE"],
    }
}
# Any user name signs in with any password (as in the oidc-provider test provider).
AUTHENTICATION_BACKENDS = ["anypassword.AnyPasswordBackend"]
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
