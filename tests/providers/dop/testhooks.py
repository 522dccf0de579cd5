"""What the test provider adds to django-oidc-provider (besides the shared user store,
anypassword.py): the standard claims for those users, and two read-only test endpoints
(/test/stats and /test/last-client-auth) that tell the tests what reached the provider. The OpenID endpoints
themselves are django-oidc-provider's, unchanged."""

import threading

from common import client_auth
from django.http import JsonResponse

_lock = threading.Lock()
_stats = {
    "authorization_code_grants": 0,
    "refresh_grants": 0,
    "userinfo_requests": 0,
    "end_sessions": 0,
}
_last_client_auth = {}


def userinfo(claims, user):
    """OIDC_USERINFO: the standard claims django-oidc-provider fills in from this dict."""
    claims["name"] = f"{user.first_name} {user.last_name}"
    claims["preferred_username"] = user.username
    claims["email"] = user.email
    claims["email_verified"] = True
    return claims


class TestHooksMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path.rstrip("/")
        grant_type = None
        if request.method == "POST" and path == "/openid/token":
            method, client_id = client_auth(request)
            grant_type = request.POST.get("grant_type")
            with _lock:
                _last_client_auth.clear()
                _last_client_auth.update(
                    method=method, client_id=client_id, endpoint=path, grant_type=grant_type
                )
        response = self.get_response(request)
        key = None
        if response.status_code == 200 and path == "/openid/token":
            key = {
                "authorization_code": "authorization_code_grants",
                "refresh_token": "refresh_grants",
            }.get(grant_type)
        elif response.status_code == 200 and path == "/openid/userinfo":
            key = "userinfo_requests"
        elif response.status_code == 302 and path == "/openid/end-session":
            key = "end_sessions"
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
