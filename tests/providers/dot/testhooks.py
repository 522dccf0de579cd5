"""What the test provider adds to django-oauth-toolkit: a user store that signs in any name,
the standard claims for those users, and two read-only test endpoints (/test/stats and
/test/last-client-auth) that tell the tests what reached the provider. The OAuth endpoints
themselves are django-oauth-toolkit's, unchanged."""

import base64
import threading
from urllib.parse import unquote_plus

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.http import JsonResponse
from oauth2_provider.oauth2_validators import OAuth2Validator

_lock = threading.Lock()
_stats = {
    "authorization_code_grants": 0,
    "refresh_grants": 0,
    "revocations": 0,
    "userinfo_requests": 0,
}
_last_client_auth = {}


class AnyPasswordBackend(ModelBackend):
    """Any user name with any non-empty password: the user is created on first sign-in."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not username or not password:
            return None
        user, _ = get_user_model().objects.get_or_create(
            username=username,
            defaults={
                "email": f"{username}@example.test",
                "first_name": "Test User",
                "last_name": username,
            },
        )
        return user


class ClaimsValidator(OAuth2Validator):
    """The standard claims of the `profile` and `email` scopes (django-oauth-toolkit's default
    has only `sub`, the user's primary key)."""

    def get_additional_claims(self, request):
        user = request.user
        return {
            "name": f"{user.first_name} {user.last_name}",
            "preferred_username": user.username,
            "email": user.email,
        }


def _client_auth(request):
    """Which client authentication a token, revocation or introspection request used."""
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


class TestHooksMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path
        grant_type = None
        if request.method == "POST" and path in ("/o/token/", "/o/revoke_token/"):
            method, client_id = _client_auth(request)
            grant_type = request.POST.get("grant_type")
            with _lock:
                _last_client_auth.clear()
                _last_client_auth.update(
                    method=method, client_id=client_id, endpoint=path, grant_type=grant_type
                )
        response = self.get_response(request)
        if response.status_code == 200:
            key = None
            if path == "/o/token/" and grant_type == "authorization_code":
                key = "authorization_code_grants"
            elif path == "/o/token/" and grant_type == "refresh_token":
                key = "refresh_grants"
            elif path == "/o/revoke_token/" and request.method == "POST":
                key = "revocations"
            elif path == "/o/userinfo/":
                key = "userinfo_requests"
            if key:
                with _lock:
                    _stats[key] += 1
        return response


def stats(request):
    with _lock:
        return JsonResponse(dict(_stats))


def last_client_auth(request):
    with _lock:
        return JsonResponse(dict(_last_client_auth))
