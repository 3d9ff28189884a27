"""The policy file's shape: every key, type, length and format, checked before the database is read.

The result is a :class:`PolicySpec` of plain dataclasses; references between entries are checked later,
in :mod:`governance.policy.plan`, where the database is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from governance.models import RiskLevel, Role
from governance.models.agents import AgentKind, AgentStatus
from governance.policy import fields as checks
from governance.policy.errors import Problem
from governance.policy.reader import Reader, join

VERSION = 1
MAX_ENTRIES = 2000
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.@+_-]{0,149}")
CAPABILITY_KEY = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
NAME_LENGTH, TEXT_LENGTH, REASON_LENGTH = 200, 2000, 1000
CAPABILITY_DEFAULTS = {
    "description": "",
    "risk_level": RiskLevel.LOW.value,
    "requires_approval": False,
    "approvals_required": 0,
    "requires_step_up": False,
    "max_token_lifetime": 300,
    "rate_limit_per_minute": None,
    "daily_quota": None,
    "constraints": {},
}


@dataclass
class OrganizationSpec:
    path: str
    slug: str
    name: str


@dataclass
class UserSpec:
    path: str
    organization: str
    username: str
    email: str
    first_name: str
    last_name: str
    role: str
    active: bool
    attributes: dict = field(default_factory=dict)


@dataclass
class CapabilitySpec:
    path: str
    key: str
    fields: dict


@dataclass
class ToolServerSpec:
    path: str
    organization: str
    name: str
    audience: str
    description: str
    capabilities: list[CapabilitySpec]


@dataclass
class AgentSpec:
    path: str
    organization: str
    name: str
    kind: str
    owner: str
    description: str
    status: str
    status_reason: str
    jwks: dict
    jwks_uri: str
    redirect_uris: list[str]
    ceiling: list[tuple[str, str]]  # (path, capability key)
    dpop_bound_tokens_required: bool = False


@dataclass
class GrantSpec:
    path: str
    organization: str
    agent: str
    capability: str
    user: str | None
    expires_at: datetime | None
    reason: str
    revoked: bool
    revoke_reason: str

    @property
    def identity(self) -> tuple[str, str, str, str | None]:
        return (self.organization, self.agent, self.capability, self.user)


@dataclass
class PolicySpec:
    organizations: list[OrganizationSpec] = field(default_factory=list)
    users: list[UserSpec] = field(default_factory=list)
    tool_servers: list[ToolServerSpec] = field(default_factory=list)
    agents: list[AgentSpec] = field(default_factory=list)
    grants: list[GrantSpec] = field(default_factory=list)


TOP_LEVEL = {"version", "organizations", "users", "tool_servers", "agents", "grants"}


def read_spec(data) -> tuple[PolicySpec, list[Problem]]:
    """Check the shape of a parsed file; return the spec and every problem found."""
    reader = Reader()
    spec = PolicySpec()
    top = reader.mapping(data, "", allowed=TOP_LEVEL, required={"version"}) if data is not None else None
    if data is None:
        reader.fail("", "the file is empty")
    if top is None:
        return spec, reader.problems
    if "version" in top and (top["version"] != VERSION or isinstance(top["version"], bool)):
        reader.fail("version", f"must be {VERSION}")
    for path, item in reader.items(top, "organizations", "", max_items=100):
        entry = reader.mapping(item, path, allowed={"slug", "name"}, required={"slug", "name"})
        if entry is not None:
            slug = reader.text(
                entry, "slug", path, max_length=64, required=True, pattern=SLUG, hint="a lowercase slug"
            )
            name = reader.text(entry, "name", path, max_length=NAME_LENGTH, required=True)
            if slug and name:
                spec.organizations.append(OrganizationSpec(path, slug, name))
    default_org = spec.organizations[0].slug if len(spec.organizations) == 1 else None
    for path, item in reader.items(top, "users", "", max_items=MAX_ENTRIES):
        spec.users.append(_user(reader, item, path, default_org))
    for path, item in reader.items(top, "tool_servers", "", max_items=MAX_ENTRIES):
        spec.tool_servers.append(_tool_server(reader, item, path, default_org))
    for path, item in reader.items(top, "agents", "", max_items=MAX_ENTRIES):
        spec.agents.append(_agent(reader, item, path, default_org))
    for path, item in reader.items(top, "grants", "", max_items=10 * MAX_ENTRIES):
        spec.grants.append(_grant(reader, item, path, default_org))
    if reader.problems:
        return spec, reader.problems
    _check_duplicates(reader, spec)
    return spec, reader.problems


def _organization(reader: Reader, entry: dict, path: str, default_org: str | None) -> str | None:
    slug = reader.text(entry, "organization", path, max_length=64, default=None, pattern=SLUG, hint="a slug")
    if slug is None and "organization" not in entry:
        if default_org is None:
            reader.fail(
                join(path, "organization"),
                "is required when the file does not declare exactly one organization",
            )
        return default_org
    return slug


def _user(reader: Reader, item, path: str, default_org: str | None) -> UserSpec | None:
    allowed = {"organization", "username", "email", "first_name", "last_name", "role", "active", "attributes"}
    entry = reader.mapping(item, path, allowed=allowed, required={"username"})
    if entry is None:
        return None
    return UserSpec(
        path=path,
        organization=_organization(reader, entry, path, default_org),
        username=reader.text(
            entry,
            "username",
            path,
            required=True,
            max_length=150,
            pattern=USERNAME,
            hint="a user name (letters, digits and . @ + _ -)",
        ),
        email=checks.email(reader, entry, path),
        first_name=reader.text(entry, "first_name", path, max_length=150),
        last_name=reader.text(entry, "last_name", path, max_length=150),
        role=reader.choice(entry, "role", path, choices=list(Role.values), default=Role.MEMBER.value),
        active=reader.flag(entry, "active", path, default=True),
        attributes=checks.attributes(reader, entry.get("attributes"), join(path, "attributes")),
    )


def _tool_server(reader: Reader, item, path: str, default_org: str | None) -> ToolServerSpec | None:
    allowed = {"organization", "name", "audience", "description", "capabilities"}
    entry = reader.mapping(item, path, allowed=allowed, required={"name", "audience"})
    if entry is None:
        return None
    capabilities = [
        _capability(reader, cap, cap_path)
        for cap_path, cap in reader.items(entry, "capabilities", path, max_items=500)
    ]
    return ToolServerSpec(
        path=path,
        organization=_organization(reader, entry, path, default_org),
        name=reader.text(entry, "name", path, max_length=NAME_LENGTH, required=True),
        audience=reader.uri(entry["audience"], join(path, "audience"), what="audience", allow_query=False)
        if "audience" in entry
        else None,
        description=reader.text(entry, "description", path, max_length=TEXT_LENGTH, multiline=True),
        capabilities=capabilities,
    )


def _capability(reader: Reader, item, path: str) -> CapabilitySpec | None:
    entry = reader.mapping(item, path, allowed={"key", *CAPABILITY_DEFAULTS}, required={"key"})
    if entry is None:
        return None
    key = reader.text(
        entry,
        "key",
        path,
        required=True,
        max_length=128,
        pattern=CAPABILITY_KEY,
        hint="a capability key: dotted lowercase words such as records.read_own",
    )
    requires_approval = reader.flag(entry, "requires_approval", path, default=False)
    fields = {
        "description": reader.text(entry, "description", path, max_length=TEXT_LENGTH, multiline=True),
        "risk_level": reader.choice(
            entry, "risk_level", path, choices=list(RiskLevel.values), default=RiskLevel.LOW.value
        ),
        "requires_approval": requires_approval,
        "approvals_required": reader.number(
            entry, "approvals_required", path, minimum=0, maximum=10, default=1 if requires_approval else 0
        ),
        "requires_step_up": reader.flag(entry, "requires_step_up", path, default=False),
        "max_token_lifetime": reader.number(
            entry, "max_token_lifetime", path, minimum=1, maximum=86400, default=300
        ),
        "rate_limit_per_minute": reader.number(
            entry, "rate_limit_per_minute", path, minimum=1, maximum=1_000_000, default=None
        ),
        "daily_quota": reader.number(
            entry, "daily_quota", path, minimum=1, maximum=100_000_000, default=None
        ),
        "constraints": checks.constraints(reader, entry.get("constraints"), join(path, "constraints")),
    }
    count = fields["approvals_required"]
    if requires_approval is True and count == 0:
        reader.fail(join(path, "approvals_required"), "must be at least 1 when requires_approval is true")
    if requires_approval is False and count:
        reader.fail(join(path, "approvals_required"), "must be 0 when requires_approval is false")
    return CapabilitySpec(path=path, key=key, fields=fields)


def _agent(reader: Reader, item, path: str, default_org: str | None) -> AgentSpec | None:
    allowed = {
        "organization",
        "name",
        "kind",
        "owner",
        "description",
        "status",
        "status_reason",
        "jwks",
        "jwks_uri",
        "redirect_uris",
        "ceiling",
        "dpop_bound_tokens_required",
    }
    entry = reader.mapping(item, path, allowed=allowed, required={"name", "kind", "owner"})
    if entry is None:
        return None
    kind = reader.choice(entry, "kind", path, choices=list(AgentKind.values), default=None)
    redirect_uris = [
        reader.uri(uri, uri_path, what="redirect URI", allow_query=True)
        for uri_path, uri in reader.items(entry, "redirect_uris", path, max_items=10)
    ]
    if redirect_uris and kind == AgentKind.BACKGROUND:
        reader.fail(
            join(path, "redirect_uris"),
            "a background agent has no redirect URIs (it uses client credentials)",
        )
    if len(set(redirect_uris)) != len(redirect_uris):
        reader.fail(join(path, "redirect_uris"), "lists a redirect URI twice")
    ceiling = []
    for cap_path, key in reader.items(entry, "ceiling", path, max_items=500):
        if not isinstance(key, str) or not CAPABILITY_KEY.fullmatch(key):
            reader.fail(cap_path, "must be a capability key such as records.read_own")
        else:
            ceiling.append((cap_path, key))
    jwks_uri = ""
    if entry.get("jwks_uri") is not None:
        jwks_uri = reader.uri(entry["jwks_uri"], join(path, "jwks_uri"), what="JWKS URI", allow_query=True)
    return AgentSpec(
        path=path,
        organization=_organization(reader, entry, path, default_org),
        name=reader.text(entry, "name", path, max_length=NAME_LENGTH, required=True),
        kind=kind,
        owner=reader.text(
            entry, "owner", path, required=True, max_length=150, pattern=USERNAME, hint="a user name"
        ),
        description=reader.text(entry, "description", path, max_length=TEXT_LENGTH, multiline=True),
        status=reader.choice(
            entry, "status", path, choices=list(AgentStatus.values), default=AgentStatus.ACTIVE.value
        ),
        status_reason=reader.text(entry, "status_reason", path, max_length=REASON_LENGTH),
        jwks=checks.jwks(reader, entry.get("jwks"), join(path, "jwks")),
        jwks_uri=jwks_uri,
        redirect_uris=redirect_uris,
        ceiling=ceiling,
        dpop_bound_tokens_required=bool(
            reader.flag(entry, "dpop_bound_tokens_required", path, default=False)
        ),
    )


def _grant(reader: Reader, item, path: str, default_org: str | None) -> GrantSpec | None:
    allowed = {
        "organization",
        "agent",
        "capability",
        "user",
        "expires_at",
        "reason",
        "revoked",
        "revoke_reason",
    }
    entry = reader.mapping(item, path, allowed=allowed, required={"agent", "capability"})
    if entry is None:
        return None
    return GrantSpec(
        path=path,
        organization=_organization(reader, entry, path, default_org),
        agent=reader.text(entry, "agent", path, required=True, max_length=NAME_LENGTH),
        capability=reader.text(
            entry,
            "capability",
            path,
            required=True,
            max_length=128,
            pattern=CAPABILITY_KEY,
            hint="a capability key",
        ),
        user=reader.text(
            entry, "user", path, max_length=150, default=None, pattern=USERNAME, hint="a user name"
        ),
        expires_at=reader.timestamp(entry, "expires_at", path),
        reason=reader.text(entry, "reason", path, max_length=REASON_LENGTH, multiline=True),
        revoked=reader.flag(entry, "revoked", path, default=False),
        revoke_reason=reader.text(entry, "revoke_reason", path, max_length=REASON_LENGTH, multiline=True),
    )


def _check_duplicates(reader: Reader, spec: PolicySpec) -> None:
    def once(entries, identity, what):
        seen: dict = {}
        for entry in entries:
            key = identity(entry)
            if key in seen:
                reader.fail(entry.path, f"repeats the {what} of {seen[key]}")
            else:
                seen[key] = entry.path

    once(spec.organizations, lambda o: o.slug, "slug")
    once(spec.users, lambda u: u.username, "username")
    once(spec.tool_servers, lambda t: (t.organization, t.name), "name")
    once(spec.tool_servers, lambda t: t.audience, "audience")
    capabilities = [(t.organization, c) for t in spec.tool_servers for c in t.capabilities]
    keys: dict = {}
    for organization, capability in capabilities:
        first = keys.setdefault((organization, capability.key), capability.path)
        if first != capability.path:
            reader.fail(
                capability.path, f"repeats the capability key of {first} (keys are unique in an organization)"
            )
    once(spec.agents, lambda a: (a.organization, a.name), "name")
    once(spec.grants, lambda g: g.identity, "agent, capability and user")
    for agent in spec.agents:
        seen: dict = {}
        for path, key in agent.ceiling:
            if key in seen:
                reader.fail(path, f"repeats {key} (first at {seen[key]})")
            seen.setdefault(key, path)
