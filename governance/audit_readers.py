"""The audit reader hook (``settings.AUDIT_READER``): who may search the audit log, and which part of it.

Admins and auditors of an organization read that organization's events; superusers read everything;
approvers and members read nothing.  The audit app asks this hook rather than importing our models.
"""

from __future__ import annotations

from audit.access import AuditReader, ToolServerChoice
from governance.models import Agent, Role, ToolServer, User

#: The search form offers at most this many agents, users and tool servers as a list; beyond, an id field
#: (the reader then carries no choices for it).
CHOICES_LIMIT = 500

AUDIT_ROLES = frozenset({Role.ADMIN, Role.AUDITOR})


def may_read_audit(user) -> bool:
    if not (getattr(user, "is_authenticated", False) and user.is_active):
        return False
    return user.is_superuser or (user.role in AUDIT_ROLES and user.organization_id is not None)


def audit_reader(user) -> AuditReader | None:
    """The :class:`AuditReader` for ``user``, or None when their role may not read the audit log."""
    if not may_read_audit(user):
        return None
    organization_id = None if user.is_superuser else user.organization_id
    scope = {} if organization_id is None else {"organization_id": organization_id}
    agents = Agent.objects.filter(**scope).order_by("name", "pk").values_list("pk", "name")
    users = User.objects.filter(**scope).order_by("username", "pk").values_list("pk", "username")
    tool_servers = ToolServer.objects.filter(**scope).order_by("name", "pk")
    servers = _bounded(tool_servers)
    return AuditReader(
        organization_id=organization_id,
        agents=_bounded(agents),
        users=_bounded(users),
        tool_servers=tuple(ToolServerChoice(id=s.pk, label=s.name, audience=s.audience) for s in servers),
    )


def _bounded(queryset) -> tuple:
    rows = tuple(queryset[: CHOICES_LIMIT + 1])
    return rows if len(rows) <= CHOICES_LIMIT else ()
