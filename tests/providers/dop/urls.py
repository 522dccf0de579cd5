from django.contrib.auth import views as auth_views
from django.urls import include, path

import testhooks

urlpatterns = [
    # The issuer is <origin>/openid; discovery at <issuer>/.well-known/openid-configuration.
    path("openid/", include("oidc_provider.urls", namespace="oidc_provider")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("test/stats", testhooks.stats),
    path("test/last-client-auth", testhooks.last_client_auth),
]
