"""Comparing a checked file with the database: the list of changes to make, or the reasons to refuse.

Nothing here writes.  Each :class:`Change` carries the path of the entry it comes from and a function
that makes the change through one governance service (which records its own audit event).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.utils import timezone

from audit.services import Actor
from governance import services
from governance.policy import plan_agents
from governance.policy.errors import Problem, show
from governance.policy.reader import join
from governance.policy.schema import PolicySpec
from governance.policy.world import Registry, World

# The order in which changes run: what later steps refer to exists first; grants are revoked before a
# ceiling shrinks and created after it grows; lifecycle changes and deactivations come last.
PHASES = [
    "organization",
    "user",
    "tool_server",
    "capability",
    "agent",
    "revoke",
    "ceiling",
    "grant",
    "status",
    "deactivate",
]


@dataclass
class Change:
    phase: str
    op: str
    kind: str
    path: str
    label: str
    run: Callable[[Registry, Actor], None]
    details: list[str] = field(default_factory=list)

    def render(self) -> str:
        text = f"{self.op} {self.kind} {self.label} ({self.path})"
        return text + (": " + "; ".join(self.details) if self.details else "")


@dataclass
class Plan:
    changes: list[Change]
    problems: list[Problem]
    world: World

    def ordered(self) -> list[Change]:
        return sorted(self.changes, key=lambda c: PHASES.index(c.phase))

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for change in self.changes:
            name = f"{change.kind}.{change.op}"
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))


def diff(current: dict, wanted: dict) -> dict:
    return {name: value for name, value in wanted.items() if current.get(name) != value}


def describe(current: dict, changes: dict) -> list[str]:
    return [f"{name}: {show(current.get(name), 40)} → {show(value, 40)}" for name, value in changes.items()]


def make_plan(spec: PolicySpec, *, file_name: str) -> Plan:
    world = World(spec)
    planner = Planner(spec, world, file_name=file_name)
    planner.organizations()
    planner.users()
    planner.tool_servers()
    plan_agents.agents(planner)
    plan_agents.grants(planner)
    return Plan(changes=planner.changes, problems=planner.problems, world=world)


class Planner:
    def __init__(self, spec: PolicySpec, world: World, *, file_name: str) -> None:
        self.spec, self.world, self.file_name = spec, world, file_name
        self.now = timezone.now()
        self.changes: list[Change] = []
        self.problems: list[Problem] = []
        self.reason = f"policy file {file_name}"
        declared = {o.slug for o in spec.organizations}
        self.known_orgs = declared | set(world.organizations)
        # Desired state, for references: what the file declares, else what the database holds.
        self.user_specs = {u.username: u for u in spec.users}
        self.capability_specs = {
            (t.organization, c.key): (t, c) for t in spec.tool_servers for c in t.capabilities
        }
        self.agent_specs = {(a.organization, a.name): a for a in spec.agents}

    def fail(self, path: str, reason: str) -> None:
        self.problems.append(Problem(path, reason))

    def add(self, phase: str, op: str, kind: str, path: str, label: str, run, details=None) -> None:
        self.changes.append(Change(phase, op, kind, path, label, run, details or []))

    def check_org(self, entry) -> bool:
        if entry.organization not in self.known_orgs:
            self.fail(
                join(entry.path, "organization"),
                f"no organization {show(entry.organization)} in the file or the database",
            )
            return False
        return True

    # Lookups in the desired state ---------------------------------------------------------------------------
    def user_in(self, slug: str, username: str) -> tuple[bool, bool]:
        """(exists in that organization, will be active)."""
        if username in self.user_specs:
            user = self.user_specs[username]
            return user.organization == slug, user.active
        user = self.world.users.get(username)
        if user is None or user.organization is None or user.organization.slug != slug:
            return False, False
        return True, user.is_active

    def capability_problem(self, slug: str, key: str) -> str | None:
        if (slug, key) in self.capability_specs:
            return None
        found = self.world.capabilities.get((slug, key), [])
        if not found:
            return f"no capability {key} in organization {slug} (neither in the file nor in the database)"
        if len(found) > 1:
            return f"{key} exists on several tool servers of {slug}; declare it in the file to settle which"
        return None

    def agent_view(self, slug: str, name: str) -> tuple[str, set[str], str] | None:
        """(kind, ceiling keys, status) the agent will have, or None when it exists nowhere."""
        if (slug, name) in self.agent_specs:
            spec = self.agent_specs[(slug, name)]
            return spec.kind, {key for _, key in spec.ceiling}, spec.status
        agent = self.world.agents.get((slug, name))
        if agent is None:
            return None
        return agent.kind, self.world.ceiling_keys(agent), agent.status

    # Organizations ------------------------------------------------------------------------------------------
    def organizations(self) -> None:
        for spec in self.spec.organizations:
            current = self.world.organizations.get(spec.slug)
            if current is None:

                def create(reg, actor, spec=spec):
                    reg[("organization", spec.slug)] = services.organization_create(
                        actor=actor, slug=spec.slug, name=spec.name
                    )

                self.add("organization", "create", "organization", spec.path, spec.slug, create)
            elif current.name != spec.name:

                def update(reg, actor, spec=spec):
                    services.organization_update(
                        actor=actor, organization=reg[("organization", spec.slug)], name=spec.name
                    )

                self.add(
                    "organization",
                    "update",
                    "organization",
                    spec.path,
                    spec.slug,
                    update,
                    describe({"name": current.name}, {"name": spec.name}),
                )

    # Users --------------------------------------------------------------------------------------------------
    def users(self) -> None:
        for spec in self.spec.users:
            if not self.check_org(spec):
                continue
            wanted = {
                "email": spec.email,
                "first_name": spec.first_name,
                "last_name": spec.last_name,
                "role": spec.role,
                "attributes": spec.attributes,
            }
            current = self.world.users.get(spec.username)
            if current is not None and (
                current.organization is None or current.organization.slug != spec.organization
            ):
                self.fail(
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

                self.add("user", "create", "user", spec.path, spec.username, create)
            else:
                state = {name: getattr(current, name) for name in wanted}
                changes = diff(state, wanted)
                if changes:

                    def update(reg, actor, spec=spec, changes=changes):
                        services.user_update(actor=actor, user=reg[("user", spec.username)], **changes)

                    self.add(
                        "user", "update", "user", spec.path, spec.username, update, describe(state, changes)
                    )
                if not current.is_active and spec.active:
                    self.fail(
                        join(spec.path, "active"),
                        f"{spec.username} is deactivated; a policy file does "
                        "not reactivate users (do it in the admin, or write active: false)",
                    )
                    continue
            if not spec.active and (current is None or current.is_active):

                def deactivate(reg, actor, spec=spec):
                    services.user_deactivate(
                        actor=actor, user=reg[("user", spec.username)], reason=self.reason
                    )

                self.add("deactivate", "deactivate", "user", spec.path, spec.username, deactivate)

    # Tool servers and capabilities --------------------------------------------------------------------------
    def tool_servers(self) -> None:
        for spec in self.spec.tool_servers:
            if not self.check_org(spec):
                continue
            current = self.world.tool_servers.get((spec.organization, spec.name))
            holder = self.world.audiences.get(spec.audience)
            if holder is not None and holder != current:
                self.fail(
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

                self.add("tool_server", "create", "tool_server", spec.path, spec.name, create)
            else:
                state = {"audience": current.audience, "description": current.description}
                changes = diff(state, {"audience": spec.audience, "description": spec.description})
                if changes:

                    def update(reg, actor, reg_key=reg_key, changes=changes):
                        services.tool_server_update(actor=actor, tool_server=reg[reg_key], **changes)

                    self.add(
                        "tool_server",
                        "update",
                        "tool_server",
                        spec.path,
                        spec.name,
                        update,
                        describe(state, changes),
                    )
            self.capabilities(spec, current)

    def capabilities(self, server_spec, server) -> None:
        slug = server_spec.organization
        for spec in server_spec.capabilities:
            existing = self.world.capabilities.get((slug, spec.key), [])
            elsewhere = [c for c in existing if server is None or c.tool_server_id != server.pk]
            if elsewhere:
                self.fail(
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

                self.add("capability", "create", "capability", spec.path, spec.key, create)
                continue
            current = existing[0]
            state = {name: getattr(current, name) for name in spec.fields}
            changes = diff(state, spec.fields)
            if changes:

                def update(reg, actor, reg_key=reg_key, changes=changes):
                    services.capability_update(actor=actor, capability=reg[reg_key], **changes)

                self.add(
                    "capability",
                    "update",
                    "capability",
                    spec.path,
                    spec.key,
                    update,
                    describe(state, changes),
                )
