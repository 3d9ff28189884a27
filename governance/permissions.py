"""Django permissions that follow from a user's Gatehouse role.

Other apps ask Django's permission API (``user.has_perm``) instead of reading Gatehouse's roles, so they
depend on nothing of this app: the audit screens ask for ``audit.view_auditevent``, which admins and auditors
of an organization hold here.  Listed in ``AUTHENTICATION_BACKENDS`` after Django's ``ModelBackend``; it
authenticates nobody.
"""

from __future__ import annotations

from governance.models import Role

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.ADMIN: frozenset({"audit.view_auditevent"}),
    Role.AUDITOR: frozenset({"audit.view_auditevent"}),
}


class RolePermissionBackend:
    """Grants the permissions of :data:`ROLE_PERMISSIONS` to active users of an organization."""

    def authenticate(self, request, **credentials):
        return None

    def get_user(self, user_id):
        return None

    def has_perm(self, user_obj, perm: str, obj=None) -> bool:
        if not user_obj.is_active or getattr(user_obj, "organization_id", None) is None:
            return False
        return perm in ROLE_PERMISSIONS.get(getattr(user_obj, "role", None), frozenset())
