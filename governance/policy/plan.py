"""Comparing a checked file with the database: the list of changes to make, or the reasons to refuse.

Nothing here writes.  Each change carries the path of the entry it comes from and a function that makes the
change through one governance service (which records its own audit event).  This module plans
organizations, users, tool servers and capabilities; :mod:`plan_agents` plans agents and grants.
"""

from __future__ import annotations

from governance import services
from governance.policy import plan_agents
from governance.policy.errors import join, show
from governance.policy.planner import Plan, Planner, describe, diff
from governance.policy.schema import PolicySpec
from governance.policy.world import World


def make_plan(spec: PolicySpec, *, file_name: str) -> Plan:
    world = World(spec)
    planner = Planner(spec, world, file_name=file_name)
    organizations(planner)
    users(planner)
    tool_servers(planner)
    plan_agents.agents(planner)
    plan_agents.grants(planner)
    return Plan(changes=planner.changes, problems=planner.problems, world=world)


# Organizations ------------------------------------------------------------------------------------------
def organizations(planner: Planner) -> None:
    for spec in planner.spec.organizations:
        current = planner.world.organizations.get(spec.slug)
        if current is None:

            def create(reg, actor, spec=spec):
                reg[("organization", spec.slug)] = services.organization_create(
                    actor=actor, slug=spec.slug, name=spec.name
                )

            planner.add("organization", "create", "organization", spec.path, spec.slug, create)
        elif current.name != spec.name:

            def update(reg, actor, spec=spec):
                services.organization_update(
                    actor=actor, organization=reg[("organization", spec.slug)], name=spec.name
                )

            planner.add(
                "organization",
                "update",
                "organization",
                spec.path,
                spec.slug,
                update,
                describe({"name": current.name}, {"name": spec.name}),
            )


# Users --------------------------------------------------------------------------------------------------
def users(planner: Planner) -> None:
    for spec in planner.spec.users:
        if not planner.check_org(spec):
            continue
        wanted = {
            "email": spec.email,
            "first_name": spec.first_name,
            "last_name": spec.last_name,
            "role": spec.role,
            "attributes": spec.attributes,
        }
        current = planner.world.users.get(spec.username)
        if current is not None and (
            current.organization is None or current.organization.slug != spec.organization
        ):
            planner.fail(
                join(spec.path, "username"),
                f"{spec.username} already exists outside organization {spec.organization}",
            )
            continue
        if current is None:

            def create(reg, actor, spec=spec, wanted=wanted):
                reg[("user", spec.username)] = services.user_create(
                    actor=actor,
                    organization=reg[("organization", spec.organization)],
                    username=spec.username,
                    password=None,
                    **wanted,
                )

            planner.add("user", "create", "user", spec.path, spec.username, create)
        else:
            state = {name: getattr(current, name) for name in wanted}
            changes = diff(state, wanted)
            if changes:

                def update(reg, actor, spec=spec, changes=changes):
                    services.user_update(actor=actor, user=reg[("user", spec.username)], **changes)

                planner.add(
                    "user", "update", "user", spec.path, spec.username, update, describe(state, changes)
                )
            if not current.is_active and spec.active:
                planner.fail(
                    join(spec.path, "active"),
                    f"{spec.username} is deactivated; a policy file does "
                    "not reactivate users (do it in the admin, or write active: false)",
                )
                continue
        if not spec.active and (current is None or current.is_active):

            def deactivate(reg, actor, spec=spec):
                services.user_deactivate(
                    actor=actor, user=reg[("user", spec.username)], reason=planner.reason
                )

            planner.add("deactivate", "deactivate", "user", spec.path, spec.username, deactivate)


# Tool servers and capabilities --------------------------------------------------------------------------
def tool_servers(planner: Planner) -> None:
    for spec in planner.spec.tool_servers:
        if not planner.check_org(spec):
            continue
        current = planner.world.tool_servers.get((spec.organization, spec.name))
        holder = planner.world.audiences.get(spec.audience)
        if holder is not None and holder != current:
            planner.fail(
                join(spec.path, "audience"),
                f"{spec.audience} is already the audience of tool server "
                f"{show(holder.name)} in organization {holder.organization.slug}",
            )
            continue
        reg_key = ("tool_server", spec.organization, spec.name)
        if current is None:

            def create(reg, actor, spec=spec, reg_key=reg_key):
                reg[reg_key] = services.tool_server_create(
                    actor=actor,
                    organization=reg[("organization", spec.organization)],
                    name=spec.name,
                    audience=spec.audience,
                    description=spec.description,
                )

            planner.add("tool_server", "create", "tool_server", spec.path, spec.name, create)
        else:
            state = {"audience": current.audience, "description": current.description}
            changes = diff(state, {"audience": spec.audience, "description": spec.description})
            if changes:

                def update(reg, actor, reg_key=reg_key, changes=changes):
                    services.tool_server_update(actor=actor, tool_server=reg[reg_key], **changes)

                planner.add(
                    "tool_server",
                    "update",
                    "tool_server",
                    spec.path,
                    spec.name,
                    update,
                    describe(state, changes),
                )
        credentials(planner, spec, current)
        capabilities(planner, spec, current)


def credentials(planner: Planner, spec, server) -> None:
    """A tool server's credentials, when the file states them; left out, they stay as they are."""
    application = server.application if server is not None else None
    if not spec.has_credentials or not planner.check_client_id(spec, application):
        return
    wanted = {
        "token_endpoint_auth_method": spec.token_endpoint_auth_method,
        "jwks": spec.jwks,
        "jwks_uri": spec.jwks_uri,
        "client_id": spec.client_id or (application.client_id if application is not None else None),
    }
    state = (
        {
            "token_endpoint_auth_method": server.token_endpoint_auth_method,
            "jwks": server.jwks or {},
            "jwks_uri": server.jwks_uri,
            "client_id": application.client_id,
        }
        if application is not None
        else {}
    )
    changes = diff(state, wanted)
    if not changes:
        return
    reg_key = ("tool_server", spec.organization, spec.name)

    def set_credentials(reg, actor, spec=spec):
        services.tool_server_set_credentials(
            actor=actor,
            tool_server=reg[reg_key],
            token_endpoint_auth_method=spec.token_endpoint_auth_method,
            jwks=spec.jwks,
            jwks_uri=spec.jwks_uri,
            client_id=spec.client_id,
        )

    details = [
        f"{name} changed" if name == "jwks" else f"{name}: {show(state.get(name), 40)} → {show(value, 40)}"
        for name, value in changes.items()
    ]
    planner.add(
        "tool_server",
        "update",
        "credentials",
        join(spec.path, "token_endpoint_auth_method"),
        spec.name,
        set_credentials,
        details,
    )


def capabilities(planner: Planner, server_spec, server) -> None:
    slug = server_spec.organization
    for spec in server_spec.capabilities:
        existing = planner.world.capabilities.get((slug, spec.key), [])
        elsewhere = [c for c in existing if server is None or c.tool_server_id != server.pk]
        if elsewhere:
            planner.fail(
                join(spec.path, "key"),
                f"{spec.key} already exists on tool server "
                f"{show(elsewhere[0].tool_server.name)}; a capability cannot move between tool servers",
            )
            continue
        reg_key = ("capability", slug, spec.key)
        server_key = ("tool_server", slug, server_spec.name)
        if not existing:

            def create(reg, actor, spec=spec, reg_key=reg_key, server_key=server_key):
                reg[reg_key] = services.capability_create(
                    actor=actor, tool_server=reg[server_key], key=spec.key, **spec.fields
                )

            planner.add("capability", "create", "capability", spec.path, spec.key, create)
            continue
        current = existing[0]
        state = {name: getattr(current, name) for name in spec.fields}
        changes = diff(state, spec.fields)
        if changes:

            def update(reg, actor, reg_key=reg_key, changes=changes):
                services.capability_update(actor=actor, capability=reg[reg_key], **changes)

            planner.add(
                "capability",
                "update",
                "capability",
                spec.path,
                spec.key,
                update,
                describe(state, changes),
            )
