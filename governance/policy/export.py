"""Writing the current state as a policy file that applying reproduces.

Exported: organizations, their users (with attributes), tool servers with capabilities and credentials
(method, public keys, client id), agents with client id, public keys and ceiling, and the grants that are
active now.  Not exported: revoked and expired grants (history lives in the audit log), passwords, second
factors and client secrets, users outside any organization.
"""

from __future__ import annotations

import yaml
from django.utils import timezone

from governance.models import Agent, Capability, Grant, Organization, ToolServer, User
from governance.models.agents import AgentStatus, TokenEndpointAuthMethod
from governance.policy.schema import CAPABILITY_DEFAULTS, VERSION


def export_policy(*, organizations: list[Organization] | None = None) -> dict:
    """The policy document (as plain data) for the given organizations, or all of them."""
    orgs = list(organizations) if organizations is not None else list(Organization.objects.order_by("slug"))
    several = len(orgs) != 1
    document: dict = {"version": VERSION, "organizations": [{"slug": o.slug, "name": o.name} for o in orgs]}

    def scoped(entry: dict, slug: str) -> dict:
        return {"organization": slug, **entry} if several else entry

    users, servers, agents, grants = [], [], [], []
    org_ids = [o.pk for o in orgs]
    for user in (
        User.objects.filter(organization_id__in=org_ids)
        .select_related("organization")
        .order_by("organization__slug", "username")
    ):
        users.append(scoped(_user(user), user.organization.slug))
    capabilities: dict[int, list[Capability]] = {}
    for capability in Capability.objects.filter(tool_server__organization_id__in=org_ids).order_by("key"):
        capabilities.setdefault(capability.tool_server_id, []).append(capability)
    for server in (
        ToolServer.objects.filter(organization_id__in=org_ids)
        .select_related("organization", "application")
        .order_by("organization__slug", "name")
    ):
        entry = {"name": server.name, "audience": server.audience}
        _put(entry, "description", server.description)
        if server.application is not None:
            entry["client_id"] = server.application.client_id
            entry["token_endpoint_auth_method"] = server.token_endpoint_auth_method
            _put(entry, "jwks", server.jwks)
            _put(entry, "jwks_uri", server.jwks_uri)
        entry["capabilities"] = [_capability(c) for c in capabilities.get(server.pk, [])]
        servers.append(scoped(entry, server.organization.slug))
    agent_rows = (
        Agent.objects.filter(organization_id__in=org_ids)
        .select_related("organization", "owner", "application")
        .prefetch_related("ceiling")
        .order_by("organization__slug", "name")
    )
    for agent in agent_rows:
        agents.append(scoped(_agent(agent), agent.organization.slug))
    now = timezone.now()
    grant_rows = (
        Grant.objects.active(at=now)
        .filter(organization_id__in=org_ids)
        .select_related("organization", "agent", "capability", "user")
        .order_by("organization__slug", "agent__name", "capability__key", "user__username")
    )
    for grant in grant_rows:
        if grant.agent.status == AgentStatus.RETIRED:
            continue
        entry = {"agent": grant.agent.name, "capability": grant.capability.key}
        if grant.user_id:
            entry["user"] = grant.user.username
        if grant.expires_at is not None:
            entry["expires_at"] = grant.expires_at.isoformat().replace("+00:00", "Z")
        _put(entry, "reason", grant.reason)
        grants.append(scoped(entry, grant.organization.slug))
    document.update(users=users, tool_servers=servers, agents=agents, grants=grants)
    return document


def export_yaml(*, organizations: list[Organization] | None = None) -> str:
    header = (
        "# Gatehouse policy file (see docs/policy-format.md), exported "
        + timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        + "\n"
    )
    return header + yaml.safe_dump(
        export_policy(organizations=organizations), sort_keys=False, allow_unicode=True, width=110
    )


def _put(entry: dict, key: str, value) -> None:
    if value not in ("", None, [], {}):
        entry[key] = value


def _user(user: User) -> dict:
    entry = {"username": user.username}
    _put(entry, "email", user.email)
    _put(entry, "first_name", user.first_name)
    _put(entry, "last_name", user.last_name)
    entry["role"] = user.role
    _put(entry, "attributes", user.attributes)
    if not user.is_active:
        entry["active"] = False
    return entry


def _capability(capability: Capability) -> dict:
    entry = {"key": capability.key}
    for name, default in CAPABILITY_DEFAULTS.items():
        value = getattr(capability, name)
        empty = value in ("", None, {}) and default in ("", None, {})
        if name == "risk_level" or (value != default and not empty):
            entry[name] = value
    return entry


def _agent(agent: Agent) -> dict:
    entry = {"name": agent.name, "kind": agent.kind, "owner": agent.owner.username}
    _put(entry, "description", agent.description)
    entry["status"] = agent.status
    if agent.status != AgentStatus.ACTIVE:
        _put(entry, "status_reason", agent.status_reason)
    _put(entry, "jwks", agent.jwks)
    _put(entry, "jwks_uri", agent.jwks_uri)
    if agent.application is not None:
        entry["client_id"] = agent.application.client_id
        _put(entry, "redirect_uris", agent.application.redirect_uris.split())
    if agent.token_endpoint_auth_method != TokenEndpointAuthMethod.PRIVATE_KEY_JWT:
        entry["token_endpoint_auth_method"] = agent.token_endpoint_auth_method
    entry["ceiling"] = sorted(c.key for c in agent.ceiling.all())
    if agent.dpop_bound_tokens_required:
        entry["dpop_bound_tokens_required"] = True
    return entry
