"""Who may read the audit log, and which part of it.

The audit app knows no users, roles or organizations of its own (it imports nothing of ours).  Reading
takes the Django permission :data:`READ_PERMISSION`; the app that owns users decides who holds it.  The
project names a *reader hook* in ``settings.AUDIT_READER``: a function ``(user) -> AuditReader | None``
that says which organization's events a reader sees and which agents, users and tool servers the search
form offers.  Without the setting, only superusers read the log (every organization), with ids for
choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.utils.module_loading import import_string

#: The Django permission that opens the audit screens, exports and API (and, for staff, the admin's).  In
#: Gatehouse ``governance.permissions.RolePermissionBackend`` gives it to admins and auditors.
READ_PERMISSION = "audit.view_auditevent"


def may_read(user) -> bool:
    """An active, signed-in user holding :data:`READ_PERMISSION` (superusers hold every permission)."""
    return bool(
        getattr(user, "is_authenticated", False) and user.is_active and user.has_perm(READ_PERMISSION)
    )


@dataclass(frozen=True)
class ToolServerChoice:
    id: int
    label: str
    audience: str = ""


@dataclass(frozen=True)
class AuditReader:
    """What one viewer may read: ``organization_id`` None means every organization (superusers only).

    ``agents``, ``users`` (id, label) and ``tool_servers`` are what the search form offers as lists; empty
    when there are too many to list, and the form then asks for an id.  Tool servers also carry their
    audience, which the tool-server filter looks for in the parameters."""

    organization_id: int | None
    agents: tuple[tuple[int, str], ...] = ()
    users: tuple[tuple[int, str], ...] = ()
    tool_servers: tuple[ToolServerChoice, ...] = field(default=())

    @property
    def all_organizations(self) -> bool:
        return self.organization_id is None


def superusers_only(user) -> AuditReader | None:
    """The default hook: active superusers read every organization's events."""
    if may_read(user) and user.is_superuser:
        return AuditReader(organization_id=None)
    return None


def reader_for(user) -> AuditReader | None:
    """The :class:`AuditReader` for ``user`` from the configured hook, or None when they may not read."""
    hook = import_string(getattr(settings, "AUDIT_READER", "audit.access.superusers_only"))
    return hook(user)
