"""What a plan is made of: the changes (each with its path and the service call that makes it), the
problems found, and the :class:`Planner` that the plan's parts (:mod:`plan`, :mod:`plan_agents`) fill in.

Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.utils import timezone

from audit.services import Actor
from governance.policy.errors import Problem, join, show
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

    def check_client_id(self, spec, application) -> bool:
        """A declared client id is free, or already this client's."""
        holder = self.world.client_ids.get(spec.client_id) if spec.client_id else None
        if holder is not None and (application is None or holder != application.pk):
            self.fail(join(spec.path, "client_id"), f"{spec.client_id} is already another client's client_id")
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
            return spec.kind, set(spec.ceiling), spec.status
        agent = self.world.agents.get((slug, name))
        if agent is None:
            return None
        return agent.kind, self.world.ceiling_keys(agent), agent.status
