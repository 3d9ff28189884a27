"""Who may open which portal page: one rule per kind of page, used by the views and the navigation."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from audit.access import may_read
from governance.models import Role


def _in_organization(user, roles: set[str]) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or (user.role in roles and user.organization_id is not None)


def can_administer(user) -> bool:
    """Admins of an organization (and superusers): agents, grants, the dashboard."""
    return _in_organization(user, {Role.ADMIN})


def can_audit(user) -> bool:
    """Auditors and admins of an organization (and superusers): audit search (the audit reader's rule)."""
    return may_read(user) and (user.is_superuser or user.organization_id is not None)


def can_approve(user) -> bool:
    """Approvers and admins of an organization (and superusers): the approvals inbox."""
    return _in_organization(user, {Role.ADMIN, Role.APPROVER})


def requires(rule: Callable[[object], bool]):
    """View decorator: sign in first; a signed-in person the rule refuses gets the 403 page."""

    def decorator(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not rule(request.user):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
