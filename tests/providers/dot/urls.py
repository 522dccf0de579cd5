from django.contrib.auth import views as auth_views
from django.urls import include, path

import testhooks

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("test/stats", testhooks.stats),
    path("test/last-client-auth", testhooks.last_client_auth),
]
