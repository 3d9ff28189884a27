"""``AdminSecondFactorMiddleware``: when the deployment says so (``GATEHOUSE_ADMIN_REQUIRES_MFA``, on by
default with DEBUG off), no admin page is served to a session without a second factor.

Thin: it decides which paths are the admin's (all under the admin's index, except its sign-in and sign-out)
and asks :func:`governance.mfa.guards.admin_second_factor_refusal`.  Other paths (the token endpoint
among them) pay one string comparison.
"""

from __future__ import annotations

from django.urls import NoReverseMatch, reverse

from governance.mfa.guards import admin_second_factor_refusal


class AdminSecondFactorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self._admin: tuple[str, frozenset[str]] | None = None

    def _admin_paths(self) -> tuple[str, frozenset[str]] | None:
        """(the admin's root, the paths under it that stay open), or None when no admin is mounted; resolved
        once, on the first request."""
        if self._admin is None:
            try:
                root = reverse("admin:index")
            except NoReverseMatch:
                return None
            self._admin = (root, frozenset({reverse("admin:login"), reverse("admin:logout")}))
        return self._admin

    def __call__(self, request):
        admin = self._admin_paths()
        if admin is not None and request.path.startswith(admin[0]) and request.path not in admin[1]:
            refusal = admin_second_factor_refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)
