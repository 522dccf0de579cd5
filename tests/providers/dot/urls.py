from django.contrib.auth import views as auth_views
from django.urls import include, path

import testhooks

from oauth2_provider.urls import metadata_urlpatterns

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    # RFC 8414 §3.1: the metadata of issuer <origin>/o is at
    # <origin>/.well-known/oauth-authorization-server/o (as django-oauth-toolkit's docs advise
    # for a prefixed mount).
    path("", include((metadata_urlpatterns, "oauth2_provider"), namespace="metadata")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("test/stats", testhooks.stats),
    path("test/last-client-auth", testhooks.last_client_auth),
]
