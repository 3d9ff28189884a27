"""What the database holds for the names a policy file mentions, read in a few queries, and the registry
of model instances that the apply step fills as it creates objects."""

from __future__ import annotations

from collections import defaultdict

from oauth2_provider.models import get_application_model

from governance.models import Agent, Capability, Grant, Organization, ToolServer, User
from governance.policy.schema import PolicySpec


class World:
    """A read-only snapshot of the rows a file refers to, keyed the way the file names them."""

    def __init__(self, spec: PolicySpec) -> None:
        slugs = {o.slug for o in spec.organizations}
        for entries in (spec.users, spec.tool_servers, spec.agents, spec.grants):
            slugs |= {e.organization for e in entries}
        usernames = {u.username for u in spec.users} | {a.owner for a in spec.agents}
        usernames |= {g.user for g in spec.grants if g.user}

        self.organizations = {o.slug: o for o in Organization.objects.filter(slug__in=slugs)}
        self.users = {
            u.username: u for u in User.objects.filter(username__in=usernames).select_related("organization")
        }
        org_ids = [o.pk for o in self.organizations.values()]
        self.tool_servers: dict[tuple[str, str], ToolServer] = {}
        servers = ToolServer.objects.filter(organization_id__in=org_ids).select_related(
            "organization", "application"
        )
        for server in servers:
            self.tool_servers[(server.organization.slug, server.name)] = server
        audiences = {t.audience for t in spec.tool_servers}
        self.audiences = {
            s.audience: s
            for s in ToolServer.objects.filter(audience__in=audiences).select_related("organization")
        }
        self.capabilities: dict[tuple[str, str], list[Capability]] = defaultdict(list)
        for capability in Capability.objects.filter(tool_server__organization_id__in=org_ids).select_related(
            "tool_server__organization"
        ):
            self.capabilities[(capability.tool_server.organization.slug, capability.key)].append(capability)
        self.agents: dict[tuple[str, str], Agent] = {}
        agents = (
            Agent.objects.filter(organization_id__in=org_ids)
            .select_related("organization", "owner", "application")
            .prefetch_related("ceiling")
        )
        for agent in agents:
            self.agents[(agent.organization.slug, agent.name)] = agent
        self.open_grants: dict[tuple[int, int, int | None], Grant] = {}
        for grant in Grant.objects.filter(
            organization_id__in=org_ids, revoked_at__isnull=True
        ).select_related("capability", "user"):
            self.open_grants[(grant.agent_id, grant.capability_id, grant.user_id)] = grant
        client_ids = {c.client_id for c in [*spec.agents, *spec.tool_servers] if c.client_id}
        # client_id → the OAuth application that holds it, whoever it belongs to.
        self.client_ids: dict[str, int] = dict(
            get_application_model().objects.filter(client_id__in=client_ids).values_list("client_id", "pk")
        )

    def users_of(self, slug: str) -> dict[str, User]:
        return {name: u for name, u in self.users.items() if u.organization and u.organization.slug == slug}

    def ceiling_keys(self, agent: Agent) -> set[str]:
        return {c.key for c in agent.ceiling.all()}


class Registry:
    """Model instances by the names the file uses; seeded from the snapshot, extended by each create."""

    def __init__(self, world: World) -> None:
        self.objects: dict[tuple, object] = {}
        for slug, org in world.organizations.items():
            self.objects[("organization", slug)] = org
        for username, user in world.users.items():
            self.objects[("user", username)] = user
        for (slug, name), server in world.tool_servers.items():
            self.objects[("tool_server", slug, name)] = server
        for (slug, key), capabilities in world.capabilities.items():
            if len(capabilities) == 1:
                self.objects[("capability", slug, key)] = capabilities[0]
        for (slug, name), agent in world.agents.items():
            self.objects[("agent", slug, name)] = agent

    def __getitem__(self, key: tuple):
        return self.objects[key]

    def __setitem__(self, key: tuple, value) -> None:
        self.objects[key] = value
