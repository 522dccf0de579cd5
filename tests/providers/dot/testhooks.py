"""What the test provider adds to django-oauth-toolkit (besides the shared user store,
anypassword.py): the standard claims for those users, and two read-only test endpoints
(/test/stats and /test/last-client-auth) that tell the tests what reached the provider. The OAuth endpoints
themselves are django-oauth-toolkit's, unchanged."""

import threading

from common import client_auth
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


class TestHooksMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path
        grant_type = None
        if request.method == "POST" and path in ("/o/token/", "/o/revoke_token/"):
            method, client_id = client_auth(request)
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
