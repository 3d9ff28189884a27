"""Template context for every page: which navigation entries the signed-in person may use."""

from __future__ import annotations

from django.http import HttpRequest

from governance.admin.base import can_manage
from governance.portal import access

# First path segment under /portal/ (or the app's root) → the navigation entry marked as current.
_CURRENT = {
    "dashboard": "dashboard",
    "agents": "agents",
    "grants": "grants",
    "mfa": "mfa",
    "audit": "audit",
    "approvals": "inbox",
}


def _current(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] == "portal":
        parts = parts[1:]
        if not parts:
            return "me"
    return _CURRENT.get(parts[0], "") if parts else ""


def navigation(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav": {}}
    return {
        "nav": {
            "dashboard": access.can_administer(user),
            "agents": access.can_administer(user),
            "grants": access.can_administer(user),
            "audit": access.can_audit(user),
            "inbox": access.can_approve(user),
            "django_admin": can_manage(user),
            "current": _current(request.path),
        }
    }
