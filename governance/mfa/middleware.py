"""``AdminSecondFactorMiddleware``: when the deployment says so (``GATEHOUSE_ADMIN_REQUIRES_MFA``, on by
default with DEBUG off), no admin page is served to a session without a second factor.

Thin: it decides which paths are the admin's (all under the admin's index, except its sign-in and sign-out)
and asks :func:`governance.mfa.guards.admin_second_factor_refusal`.
"""

from __future__ import annotations

from django.urls import reverse

from governance.mfa.guards import admin_second_factor_refusal


class AdminSecondFactorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        admin_root = reverse("admin:index")
        if request.path.startswith(admin_root) and request.path not in (
            reverse("admin:login"),
            reverse("admin:logout"),
        ):
            refusal = admin_second_factor_refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)
