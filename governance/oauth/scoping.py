"""Scoping at issue: which requested capabilities a token may carry, for whom, on which audience, how long.

``evaluate_request`` is the single rule, used by the token endpoint and by the consent page.  A token may
carry a capability only when an active grant covers it for this user and agent (a background agent: its own
service grants) on the token's one audience.  The lifetime is the smallest of the default, each capability's
``max_token_lifetime`` and each covering grant's remaining time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils import timezone

from governance.conf import gatehouse_settings
from governance.models import Agent, Capability, Grant, ToolServer, User
from governance.models.agents import AgentKind
from governance.oauth import issuance_queries
from governance.oauth.params import MAX_RESOURCE_LENGTH, MAX_SCOPE_LENGTH, MAX_SCOPES
from governance.oauth.refusals import Refusal


@dataclass
class ScopeDecision:
    requested: list[str]
    allowed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    needs_approval: list[str] = field(default_factory=list)
    outside_ceiling: list[str] = field(default_factory=list)
    lifetime_seconds: int = 0
    grants: list[Grant] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """Every requested capability is covered: a token may be issued."""
        return bool(self.requested) and not self.refused

    @property
    def grantable(self) -> list[str]:
        """Refused now, but a user may consent to them (inside the ceiling, no approval needed)."""
        blocked = set(self.outside_ceiling) | set(self.needs_approval)
        return [key for key in self.refused if key not in blocked]


def default_lifetime() -> int:
    """Seconds a token lives when no capability or grant asks for less (``DEFAULT_TOKEN_LIFETIME``)."""
    return int(gatehouse_settings.DEFAULT_TOKEN_LIFETIME.total_seconds())


def evaluate_request(
    *, agent: Agent, user: User | None, audience: ToolServer, requested: list[str]
) -> ScopeDecision:
    """Split ``requested`` capability keys into allowed and refused for a token on ``audience``."""
    requested = list(dict.fromkeys(requested))
    now = timezone.now()
    grants = covering_grants(agent, user, requested, now, audience=audience.audience)
    return decide(agent=agent, user=user, audience=audience, requested=requested, grants=grants, now=now)


def evaluate_for_resource(
    resources: list[str],
    *,
    agent: Agent,
    user: User | None,
    requested: list[str],
    grants: dict[str, Grant] | None = None,
    now=None,
) -> tuple[ToolServer, ScopeDecision]:
    """:func:`resolve_audience` then :func:`evaluate_request`, with the same answers and refusals.

    When grants cover every requested key, one query finds them and their tool server (the audience is
    unique, and the grants query keeps the organization rule); only otherwise is the tool server looked up
    on its own, to refuse an unknown audience with ``invalid_target`` before any scope verdict.  ``grants``:
    the covering grants when the caller has read them already (:func:`covering_grants`'s answer, e.g. in
    the direct path's one statement).
    """
    resource = _one_resource(resources)
    requested = list(dict.fromkeys(requested))
    now = now or timezone.now()
    if grants is None:
        grants = covering_grants(agent, user, requested, now, audience=resource)
    if grants and set(requested) <= set(grants):
        server = next(iter(grants.values())).capability.tool_server
    else:
        server = resolve_audience(resources, agent=agent)
    decision = decide(agent=agent, user=user, audience=server, requested=requested, grants=grants, now=now)
    return server, decision


def covering_grants(
    agent: Agent, user: User | None, requested: list[str], now, *, audience: str
) -> dict[str, Grant]:
    """key -> the active grant of this agent (and user) covering it on ``audience``, inside the ceiling.

    One query, written once as SQL (:func:`issuance_queries.covering_grants_on_audience`; its ORM
    equivalent is stated in tests/oauth/test_issuance_queries.py): this runs on every token request.
    """
    if not _may_hold_grants(agent, user):
        return {}
    return {
        grant.capability.key: grant
        for grant in issuance_queries.covering_grants_on_audience(
            agent=agent, user=_owner(agent, user), keys=requested, now=now, audience=audience
        )
    }


def _owner(agent: Agent, user: User | None) -> User | None:
    """Whose grants count: a background agent's own service grants (no user), else the user's."""
    return None if agent.kind == AgentKind.BACKGROUND else user


def _may_hold_grants(agent: Agent, user: User | None) -> bool:
    """An interactive agent holds grants only for an active user; a background agent for itself."""
    if agent.kind == AgentKind.BACKGROUND:
        return True
    return user is not None and user.is_active


def decide(
    *, agent: Agent, user: User | None, audience: ToolServer, requested: list[str], grants: dict, now
) -> ScopeDecision:
    """The verdict on ``requested`` given the covering ``grants`` (key → grant): allowed, refused and why,
    and the lifetime.  Queries only when some key is not covered (to say why it is refused)."""
    decision = ScopeDecision(requested=requested)
    if grants and set(requested) <= set(grants):
        # Every key is covered by a grant inside the ceiling: the two lookups below would change nothing.
        capabilities = {key: grant.capability for key, grant in grants.items()}
        ceiling = set(grants)
    else:
        capabilities = {c.key: c for c in Capability.objects.filter(tool_server=audience, key__in=requested)}
        ceiling = set(
            agent.ceiling.filter(tool_server=audience, key__in=requested).values_list("key", flat=True)
        )
    lifetime = default_lifetime()
    for key in requested:
        capability = capabilities.get(key)
        if capability is None or key not in ceiling:
            decision.outside_ceiling.append(key)
            decision.refused.append(key)
        elif key in grants:
            grant = grants[key]
            decision.allowed.append(key)
            decision.grants.append(grant)
            lifetime = min(lifetime, capability.max_token_lifetime)
            if grant.expires_at is not None:
                lifetime = min(lifetime, int((grant.expires_at - now).total_seconds()))
        else:
            decision.refused.append(key)
            if capability.requires_approval:
                decision.needs_approval.append(key)
    decision.lifetime_seconds = max(lifetime, 0) if decision.allowed else 0
    return decision


def parse_scope(scope: str | None) -> list[str]:
    """Split a scope parameter; refuse oversized input before it reaches a query."""
    if not scope:
        return []
    if len(scope) > MAX_SCOPE_LENGTH:
        raise Refusal("invalid_scope", "The scope parameter is too long.")
    keys = scope.split()
    if len(keys) > MAX_SCOPES:
        raise Refusal("invalid_scope", "Too many scopes were requested.")
    return keys


def _one_resource(resources: list[str]) -> str:
    """RFC 8707 shape: exactly one ``resource`` of bounded length (no query)."""
    resources = list(dict.fromkeys(r for r in resources if r))
    if not resources:
        raise Refusal("invalid_target", "A resource parameter naming one registered tool server is required.")
    if len(resources) > 1:
        raise Refusal("invalid_target", "A token is issued for exactly one resource.")
    resource = resources[0]
    if not isinstance(resource, str) or len(resource) > MAX_RESOURCE_LENGTH:
        raise Refusal("invalid_target", "The resource is not a registered tool server.")
    return resource


def resolve_audience(resources: list[str], *, agent: Agent) -> ToolServer:
    """RFC 8707: exactly one ``resource``, a registered tool server of the agent's organization."""
    resource = _one_resource(resources)
    server = ToolServer.objects.filter(audience=resource, organization_id=agent.organization_id).first()
    if server is None:
        raise Refusal("invalid_target", "The resource is not a registered tool server.", resource=resource)
    return server
