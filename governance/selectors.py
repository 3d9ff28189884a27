"""Reads, already restricted to what the viewer may see."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from governance.models import Agent, Capability, Grant, Organization, ToolServer, User


def _scoped(queryset: QuerySet, viewer: User, field: str) -> QuerySet:
    """Restrict to the viewer's organization through ``field``; nothing for a non-superuser without one."""
    if viewer.is_superuser:
        return queryset
    if viewer.organization_id is None:
        return queryset.none()
    return queryset.filter(**{field: viewer.organization_id})


def agents_visible_to(viewer: User) -> QuerySet[Agent]:
    return _scoped(
        Agent.objects.select_related("organization", "owner", "application"), viewer, "organization_id"
    )


def grants_visible_to(viewer: User) -> QuerySet[Grant]:
    grants = Grant.objects.select_related(
        "agent", "user", "capability__tool_server", "granted_by", "revoked_by"
    )
    return _scoped(grants, viewer, "organization_id")


def organizations_visible_to(viewer: User) -> QuerySet[Organization]:
    return _scoped(Organization.objects.all(), viewer, "pk")


def users_visible_to(viewer: User) -> QuerySet[User]:
    return _scoped(User.objects.select_related("organization"), viewer, "organization_id")


def tool_servers_visible_to(viewer: User) -> QuerySet[ToolServer]:
    queryset = ToolServer.objects.select_related("organization", "application")
    return _scoped(queryset, viewer, "organization_id")


def capabilities_visible_to(viewer: User) -> QuerySet[Capability]:
    return _scoped(
        Capability.objects.select_related("tool_server__organization"), viewer, "tool_server__organization_id"
    )


def active_grants(
    *, agent: Agent, user: User | None, audience: str | None = None, at=None
) -> QuerySet[Grant]:
    """Grants that cover a token for this agent (and user) right now, optionally on one audience."""
    grants = Grant.objects.active(at=at or timezone.now()).filter(agent=agent, user=user)
    if audience is not None:
        grants = grants.filter(capability__tool_server__audience=audience)
    return grants.select_related("capability__tool_server")


def capabilities_for_audience(audience: str) -> QuerySet[Capability]:
    return Capability.objects.filter(tool_server__audience=audience).select_related("tool_server")
