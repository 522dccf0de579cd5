"""Django settings of the third test provider: django-oidc-provider, for the token-handler
integration tests only (see serve.py). The shared part is in ../common_settings.py."""

from common_settings import *  # noqa: F403

INSTALLED_APPS += ["oidc_provider"]  # noqa: F405
# django-oidc-provider caches its discovery document (OIDC_DISCOVERY_CACHE_ENABLE is off by
# default; a local cache keeps any use of it inside the process).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The standard claims of the test users, in userinfo and (so /claims shows them) the ID token.
OIDC_USERINFO = "testhooks.userinfo"
OIDC_IDTOKEN_INCLUDE_CLAIMS = True
OIDC_TOKEN_EXPIRE = 300
OIDC_IDTOKEN_EXPIRE = 300
