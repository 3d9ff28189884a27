"""The authentication backend behind every password sign-in (portal and admin): Django's ``ModelBackend``
with the throttle and the audit of :mod:`governance.services.sign_in` around the password check.

Thin: it reads the client address the way the audit log does (``REMOTE_ADDR``, or the configured number of
trusted proxies' ``X-Forwarded-For`` hop; never a client-chosen one), asks the services, and answers as
``ModelBackend`` does.  A locked attempt still hashes the password once, as an unknown username does, so
neither answers faster than a wrong password.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from audit.context import client_ip
from governance.services.sign_in import (
    SignInLocked,
    lookup,
    sign_in_check,
    sign_in_failed,
    sign_in_succeeded,
)


def _via(request: HttpRequest | None) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "other"
    return "admin" if match.namespace == "admin" else "portal"


class ThrottledModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        User = get_user_model()
        if username is None:
            username = kwargs.get(User.USERNAME_FIELD)
        if username is None or password is None:
            return None
        address = client_ip(request.META) if request is not None else None
        via = _via(request)
        try:
            sign_in_check(username=username, address=address, via=via)
        except SignInLocked:
            User().set_password(password)
            raise PermissionDenied from None  # stops the other backends too
        user = lookup(username)
        if user is None:
            User().set_password(password)  # as ModelBackend: the same work as a wrong password
        elif user.check_password(password) and self.user_can_authenticate(user):
            sign_in_succeeded(user=user, address=address, via=via)
            return user
        sign_in_failed(username=username, address=address, user=user, via=via)
        return None
