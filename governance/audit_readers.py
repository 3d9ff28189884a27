"""The audit reader hook (``settings.AUDIT_READER``): which part of the audit log a reader sees.

Who may read is the permission ``audit.view_auditevent`` (:mod:`governance.permissions` gives it to admins
and auditors of an organization; superusers hold every permission).  Readers see their organization's
events; superusers see every organization's.  The audit app asks this hook rather than importing our
models.
"""

from __future__ import annotations

from audit.access import AuditReader, ToolServerChoice, may_read
from governance.models import Agent, ToolServer, User

#: The search form offers at most this many agents, users and tool servers as a list; beyond, an id field
#: (the reader then carries no choices for it).
CHOICES_LIMIT = 500


def audit_reader(user) -> AuditReader | None:
    """The :class:`AuditReader` for ``user``, or None when they may not read the audit log."""
    if not may_read(user) or (not user.is_superuser and user.organization_id is None):
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
