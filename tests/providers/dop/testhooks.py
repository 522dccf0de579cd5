"""What the test provider adds to django-oidc-provider (besides the shared user store,
anypassword.py): the standard claims for those users, and two read-only test endpoints
(/test/stats and /test/last-client-auth, common.TestHooks) that tell the tests what reached the
provider. The OpenID endpoints themselves are django-oidc-provider's, unchanged."""

from common import TestHooks


def userinfo(claims, user):
    """OIDC_USERINFO: the standard claims django-oidc-provider fills in from this dict."""
    claims["name"] = f"{user.first_name} {user.last_name}"
    claims["preferred_username"] = user.username
    claims["email"] = user.email
    claims["email_verified"] = True
    return claims


def _counter_of(path, method, grant_type, status):
    path = path.rstrip("/")
    if status == 200 and path == "/openid/token":
        return {"authorization_code": "authorization_code_grants", "refresh_token": "refresh_grants"}.get(
            grant_type
        )
    if status == 200 and path == "/openid/userinfo":
        return "userinfo_requests"
    if status == 302 and path == "/openid/end-session":
        return "end_sessions"
    return None


HOOKS = TestHooks(
    ["authorization_code_grants", "refresh_grants", "userinfo_requests", "end_sessions"],
    ("/openid/token", "/openid/token/"),
    _counter_of,
)
TestHooksMiddleware = HOOKS.middleware
stats = HOOKS.stats
last_client_auth = HOOKS.last_client_auth
