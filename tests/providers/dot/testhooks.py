"""What the test provider adds to django-oauth-toolkit (besides the shared user store,
anypassword.py): the standard claims for those users, and two read-only test endpoints
(/test/stats and /test/last-client-auth, common.TestHooks) that tell the tests what reached the
provider. The OAuth endpoints themselves are django-oauth-toolkit's, unchanged."""

from common import TestHooks
from oauth2_provider.oauth2_validators import OAuth2Validator


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


def _counter_of(path, method, grant_type, status):
    if status != 200:
        return None
    if path == "/o/token/":
        return {"authorization_code": "authorization_code_grants", "refresh_token": "refresh_grants"}.get(
            grant_type
        )
    if path == "/o/revoke_token/" and method == "POST":
        return "revocations"
    if path == "/o/userinfo/":
        return "userinfo_requests"
    return None


HOOKS = TestHooks(
    ["authorization_code_grants", "refresh_grants", "revocations", "userinfo_requests"],
    ("/o/token/", "/o/revoke_token/"),
    _counter_of,
)
TestHooksMiddleware = HOOKS.middleware
stats = HOOKS.stats
last_client_auth = HOOKS.last_client_auth
