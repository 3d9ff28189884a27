"""The agent and grant part of the plan: identity and keys, ceiling, lifecycle, and grants."""

from __future__ import annotations

from governance import services
from governance.models.agents import AgentKind, AgentStatus
from governance.policy.errors import join, show
from governance.policy.planner import Planner
from governance.services.agents import AGENT_AUTH_METHODS

# current status → wanted status → the lifecycle service that makes the move.
TRANSITIONS = {
    (AgentStatus.PENDING, AgentStatus.ACTIVE): services.agent_activate,
    (AgentStatus.PENDING, AgentStatus.SUSPENDED): services.agent_suspend,
    (AgentStatus.ACTIVE, AgentStatus.SUSPENDED): services.agent_suspend,
    (AgentStatus.SUSPENDED, AgentStatus.ACTIVE): services.agent_reactivate,
    (AgentStatus.PENDING, AgentStatus.RETIRED): services.agent_retire,
    (AgentStatus.ACTIVE, AgentStatus.RETIRED): services.agent_retire,
    (AgentStatus.SUSPENDED, AgentStatus.RETIRED): services.agent_retire,
}


def agents(planner: Planner) -> None:
    for spec in planner.spec.agents:
        if not planner.check_org(spec):
            continue
        slug = spec.organization
        current = planner.world.agents.get((slug, spec.name))
        ok = _check_owner(planner, spec)
        for path, key in spec.ceiling_entries():
            problem = planner.capability_problem(slug, key)
            if problem:
                planner.fail(path, problem)
                ok = False
        if current is not None and current.kind != spec.kind:
            planner.fail(
                join(spec.path, "kind"),
                f"the agent is {current.kind}; an agent's kind cannot change (create a new agent)",
            )
            ok = False
        before = current.status if current is not None else AgentStatus.ACTIVE
        new_and_pending = current is None and spec.status == AgentStatus.PENDING
        if spec.status != before and (before, spec.status) not in TRANSITIONS and not new_and_pending:
            planner.fail(join(spec.path, "status"), f"the agent is {before}; it cannot become {spec.status}")
            ok = False
        ok = planner.check_client_id(spec, current.application if current is not None else None) and ok
        ok = _check_auth_method(planner, spec, current) and ok
        if ok:
            _plan_agent(planner, spec, current)


def _check_auth_method(planner: Planner, spec, current) -> bool:
    """A file declares keys or public clients; a secret method stays as dynamic registration made it."""
    before = current.token_endpoint_auth_method if current is not None else None
    wanted = spec.token_endpoint_auth_method
    if wanted == before or (wanted in AGENT_AUTH_METHODS and before in (None, *AGENT_AUTH_METHODS)):
        return True
    planner.fail(
        join(spec.path, "token_endpoint_auth_method"),
        f"a policy file does not {'create' if current is None else 'switch'} agents to or from a secret "
        f"method (it is {before or 'new'}; {wanted} wanted): secrets come from dynamic registration",
    )
    return False


def _check_owner(planner: Planner, spec) -> bool:
    exists, _ = planner.user_in(spec.organization, spec.owner)
    if not exists:
        planner.fail(join(spec.path, "owner"), f"no user {spec.owner} in organization {spec.organization}")
    return exists


def _plan_agent(planner: Planner, spec, current) -> None:
    slug = spec.organization
    reg_key = ("agent", slug, spec.name)
    keys = list(spec.ceiling)
    if current is None:
        initial = AgentStatus.PENDING if spec.status == AgentStatus.PENDING else AgentStatus.ACTIVE

        def create(reg, actor, spec=spec):
            reg[reg_key] = services.agent_create(
                actor=actor,
                organization=reg[("organization", slug)],
                name=spec.name,
                kind=spec.kind,
                owner=reg[("user", spec.owner)],
                description=spec.description,
                jwks=spec.jwks,
                jwks_uri=spec.jwks_uri,
                redirect_uris=spec.redirect_uris,
                status=initial,
                ceiling=[reg[("capability", slug, key)] for key in keys],
                dpop_bound_tokens_required=spec.dpop_bound_tokens_required,
                token_endpoint_auth_method=spec.token_endpoint_auth_method,
                client_id=spec.client_id,
            )

        planner.add("agent", "create", "agent", spec.path, spec.name, create)
    else:
        application = current.application
        state = {
            "description": current.description,
            "owner": current.owner.username,
            "jwks": current.jwks or {},
            "jwks_uri": current.jwks_uri,
            "redirect_uris": application.redirect_uris.split() if application is not None else [],
            "dpop_bound_tokens_required": current.dpop_bound_tokens_required,
            "token_endpoint_auth_method": current.token_endpoint_auth_method,
            "client_id": application.client_id if application is not None else None,
        }
        wanted = {
            "description": spec.description,
            "owner": spec.owner,
            "jwks": spec.jwks,
            "jwks_uri": spec.jwks_uri,
            "redirect_uris": spec.redirect_uris,
            "dpop_bound_tokens_required": spec.dpop_bound_tokens_required,
            "token_endpoint_auth_method": spec.token_endpoint_auth_method,
            # Left out: the client id Gatehouse generated stays.
            "client_id": spec.client_id or state["client_id"],
        }
        changes = {name: value for name, value in wanted.items() if state[name] != value}
        if changes:
            details = [
                f"{name} changed"
                if name == "jwks"
                else f"{name}: {show(state[name], 40)} → {show(value, 40)}"
                for name, value in changes.items()
            ]

            def update(reg, actor, changes=changes):
                arguments = dict(changes)
                if "owner" in arguments:
                    arguments["owner"] = reg[("user", arguments["owner"])]
                services.agent_update(actor=actor, agent=reg[reg_key], **arguments)

            planner.add("agent", "update", "agent", spec.path, spec.name, update, details)
        _plan_ceiling(planner, spec, current, set(keys))
    before = current.status if current is not None else initial
    if spec.status != before:
        move = TRANSITIONS[(before, spec.status)]

        def transition(reg, actor, spec=spec, move=move):
            move(actor=actor, agent=reg[reg_key], reason=spec.status_reason or planner.reason)

        planner.add(
            "status",
            spec.status if spec.status != AgentStatus.ACTIVE else "activate",
            "agent",
            join(spec.path, "status"),
            spec.name,
            transition,
            [f"status: {before} → {spec.status}"],
        )


def _plan_ceiling(planner: Planner, spec, current, wanted: set[str]) -> None:
    have = planner.world.ceiling_keys(current)
    if have == wanted:
        return
    removed = have - wanted
    revoked_in_file = {
        (g.capability, g.user)
        for g in planner.spec.grants
        if g.revoked and (g.organization, g.agent) == (spec.organization, spec.name)
    }
    blocking = sorted(
        (
            g
            for g in planner.world.open_grants.values()
            if g.agent_id == current.pk and g.capability.key in removed
        ),
        key=lambda g: (g.capability.key, g.user.username if g.user else ""),
    )
    for grant in blocking:
        if (grant.capability.key, grant.user.username if grant.user else None) not in revoked_in_file:
            who = f"for {grant.user.username}" if grant.user else "(service grant)"
            planner.fail(
                join(spec.path, "ceiling"),
                f"removing {grant.capability.key} needs its open grant "
                f"{who} revoked: add that grant to grants with revoked: true",
            )
    slug = spec.organization

    def set_ceiling(reg, actor):
        services.agent_set_ceiling(
            actor=actor,
            agent=reg[("agent", slug, spec.name)],
            capabilities=[reg[("capability", slug, key)] for key in sorted(wanted)],
        )

    details = [f"add {', '.join(sorted(wanted - have))}"] if wanted - have else []
    details += [f"remove {', '.join(sorted(removed))}"] if removed else []
    planner.add("ceiling", "update", "ceiling", join(spec.path, "ceiling"), spec.name, set_ceiling, details)


def grants(planner: Planner) -> None:
    for spec in planner.spec.grants:
        if not planner.check_org(spec):
            continue
        if _check_grant(planner, spec):
            _plan_grant(planner, spec)


def _check_grant(planner: Planner, spec) -> bool:
    slug = spec.organization
    view = planner.agent_view(slug, spec.agent)
    ok = True
    if view is None:
        planner.fail(join(spec.path, "agent"), f"no agent {show(spec.agent)} in organization {slug}")
        return False
    kind, ceiling, status = view
    problem = planner.capability_problem(slug, spec.capability)
    if problem:
        planner.fail(join(spec.path, "capability"), problem)
        ok = False
    if kind == AgentKind.BACKGROUND and spec.user is not None:
        planner.fail(
            join(spec.path, "user"),
            f"{spec.agent} is a background agent: its grants are its own and name no user",
        )
        return False
    if kind == AgentKind.INTERACTIVE and spec.user is None:
        planner.fail(
            join(spec.path, "user"), f"{spec.agent} is an interactive agent: name the user it acts for"
        )
        return False
    if spec.user is not None:
        exists, _ = planner.user_in(slug, spec.user)
        if not exists:
            planner.fail(join(spec.path, "user"), f"no user {spec.user} in organization {slug}")
            ok = False
    if spec.revoked or not ok:
        return ok
    if spec.capability not in ceiling:
        planner.fail(
            join(spec.path, "capability"), f"{spec.capability} is outside the ceiling of agent {spec.agent}"
        )
        ok = False
    if status == AgentStatus.RETIRED:
        planner.fail(
            spec.path,
            f"agent {spec.agent} is retired and holds no grants; remove the entry or write revoked: true",
        )
        ok = False
    return ok


def _plan_grant(planner: Planner, spec) -> None:
    slug = spec.organization
    agent = planner.world.agents.get((slug, spec.agent))
    capabilities = planner.world.capabilities.get((slug, spec.capability), [])
    user = planner.world.users.get(spec.user) if spec.user else None
    existing = None
    if agent is not None and len(capabilities) == 1 and (spec.user is None or user is not None):
        existing = planner.world.open_grants.get((agent.pk, capabilities[0].pk, user.pk if user else None))
    label = f"{spec.capability} for {spec.user or 'service'} via {spec.agent}"
    if spec.revoked:
        if existing is not None:

            def revoke(reg, actor, grant=existing):
                services.grant_revoke(actor=actor, grant=grant, reason=spec.revoke_reason or planner.reason)

            planner.add("revoke", "revoke", "grant", spec.path, label, revoke)
        return
    if existing is not None and existing.expires_at == spec.expires_at:
        return
    if spec.expires_at is not None and spec.expires_at <= planner.now:
        planner.fail(
            join(spec.path, "expires_at"),
            "is in the past; a grant can only be created or renewed until a future time",
        )
        return
    if existing is not None:

        def renew(reg, actor, grant=existing):
            services.grant_renew(actor=actor, grant=grant, expires_at=spec.expires_at, reason=planner.reason)

        planner.add(
            "grant",
            "renew",
            "grant",
            spec.path,
            label,
            renew,
            [f"expires_at: {_when(existing.expires_at)} → {_when(spec.expires_at)}"],
        )
        return
    if user is not None and not user.is_active:
        planner.fail(join(spec.path, "user"), f"{spec.user} is deactivated and cannot receive a grant")
        return

    def create(reg, actor):
        services.grant_create(
            actor=actor,
            agent=reg[("agent", slug, spec.agent)],
            capability=reg[("capability", slug, spec.capability)],
            user=reg[("user", spec.user)] if spec.user else None,
            expires_at=spec.expires_at,
            reason=spec.reason or planner.reason,
        )

    planner.add("grant", "create", "grant", spec.path, label, create)


def _when(value) -> str:
    return value.isoformat() if value is not None else "never"
