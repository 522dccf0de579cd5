"""The user store of both Python test providers: any user name signs in with any non-empty
password, and is created on first sign-in with an email address and a name."""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend


class AnyPasswordBackend(ModelBackend):
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
