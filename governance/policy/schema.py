"""The policy file's shape: every key, type, length and format, checked before the database is read.

Pydantic models in strict mode (``"300"`` is not a number, ``"yes"`` not a boolean) that forbid unknown keys.
:func:`read_spec` returns the :class:`PolicySpec` and every problem found, each with its path in the file
(``agents[2].jwks.keys[0]``).  References between entries are checked later, in
:mod:`governance.policy.plan`, where the database is known.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from governance.models import RiskLevel, Role
from governance.models.agents import AgentKind, AgentStatus, TokenEndpointAuthMethod
from governance.policy.errors import Problem, join, show
from governance.policy.types import (
    ApprovalCount,
    Attributes,
    Audience,
    CapabilityKey,
    ClientId,
    Constraints,
    DailyQuota,
    Description,
    Email,
    Jwks,
    JwksUri,
    Lifetime,
    Name,
    PersonName,
    RatePerMinute,
    Reason,
    RedirectUri,
    Slug,
    Timestamp,
    Username,
    refuse,
    type_name,
)

VERSION = 1
MAX_ENTRIES = 2000
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
    # The approval policy (docs/approvals.md); named approvers are set in the admin, not in files yet.
    "approver_role": Role.APPROVER.value,
    "on_behalf_of_may_approve": False,
    "exclude_agent_owner": False,
    "tolerate_denials": False,
    "approval_expiry_seconds": 3600,
}
# How an agent authenticates at the token endpoint: with its key, or not at all (a public client: PKCE only,
# for desktop and command-line agents).  The secret methods appear in exports of dynamically registered
# agents; a file cannot switch an agent to or from them (see plan_agents), and never holds a secret.
AGENT_AUTH_METHODS = tuple(TokenEndpointAuthMethod.values)
# How a tool server authenticates at introspection and the decision API.  A secret is set with
# `manage.py tool_server_secret`, never written in a file.
TOOL_SERVER_AUTH_METHODS = ("private_key_jwt", "client_secret_basic", "client_secret_post")


class Entry(BaseModel):
    """An entry of the file: strict types, no unknown keys, and ``null`` meaning "the default"."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)
    _path: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @property
    def path(self) -> str:
        return self._path


class OrganizationSpec(Entry):
    slug: Slug
    name: Name


class Scoped(Entry):
    """An entry that belongs to an organization: named, or the file's only one."""

    organization: Slug | None = None


class UserSpec(Scoped):
    username: Username
    email: Email = ""
    first_name: PersonName = ""
    last_name: PersonName = ""
    role: Literal[tuple(Role.values)] = Role.MEMBER.value
    active: bool = True
    attributes: Attributes = Field(default_factory=dict)


class CapabilitySpec(Entry):
    key: CapabilityKey
    description: Description = ""
    risk_level: Literal[tuple(RiskLevel.values)] = RiskLevel.LOW.value
    requires_approval: bool = False
    approvals_required: ApprovalCount = None
    requires_step_up: bool = False
    max_token_lifetime: Lifetime = 300
    rate_limit_per_minute: RatePerMinute = None
    daily_quota: DailyQuota = None
    constraints: Constraints = Field(default_factory=dict)
    approver_role: Literal[(*Role.values, "")] = Role.APPROVER.value
    on_behalf_of_may_approve: bool = False
    exclude_agent_owner: bool = False
    tolerate_denials: bool = False
    approval_expiry_seconds: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 3600

    @model_validator(mode="after")
    def _approvals_agree(self) -> CapabilitySpec:
        if self.approvals_required is None:
            self.approvals_required = 1 if self.requires_approval else 0
        if self.requires_approval and self.approvals_required == 0:
            raise refuse("must be at least 1 when requires_approval is true", where="approvals_required")
        if not self.requires_approval and self.approvals_required:
            raise refuse("must be 0 when requires_approval is false", where="approvals_required")
        return self

    @property
    def fields(self) -> dict:
        """The capability's fields as the services take them (defaults filled in)."""
        values = {name: getattr(self, name) for name in CAPABILITY_DEFAULTS}
        values["constraints"] = dict(self.constraints)
        return values


class ToolServerSpec(Scoped):
    name: Name
    audience: Audience
    description: Description = ""
    capabilities: Annotated[list[CapabilitySpec], Field(max_length=500)] = Field(default_factory=list)
    # The credentials the tool server authenticates with at introspection and the decision API.
    client_id: ClientId | None = None
    token_endpoint_auth_method: Literal[TOOL_SERVER_AUTH_METHODS] | None = None
    jwks: Jwks = Field(default_factory=dict)
    jwks_uri: JwksUri = ""

    @model_validator(mode="after")
    def _credentials_agree(self) -> ToolServerSpec:
        keyed = bool(self.jwks or self.jwks_uri)
        method = self.token_endpoint_auth_method
        if method is None and (keyed or self.client_id):
            self.token_endpoint_auth_method = method = "private_key_jwt"
        if method == "private_key_jwt" and not keyed:
            raise refuse("private_key_jwt needs jwks or jwks_uri", where="token_endpoint_auth_method")
        if method is not None and method != "private_key_jwt" and keyed:
            raise refuse(f"{method} uses a secret; jwks and jwks_uri are for private_key_jwt", where="jwks")
        if self.jwks and self.jwks_uri:
            raise refuse("give jwks or jwks_uri, not both", where="jwks_uri")
        return self

    @property
    def has_credentials(self) -> bool:
        return self.token_endpoint_auth_method is not None


class AgentSpec(Scoped):
    name: Name
    kind: Literal[tuple(AgentKind.values)]
    owner: Username
    description: Description = ""
    status: Literal[tuple(AgentStatus.values)] = AgentStatus.ACTIVE.value
    status_reason: Reason = ""
    client_id: ClientId | None = None
    token_endpoint_auth_method: Literal[AGENT_AUTH_METHODS] = "private_key_jwt"
    jwks: Jwks = Field(default_factory=dict)
    jwks_uri: JwksUri = ""
    redirect_uris: Annotated[list[RedirectUri], Field(max_length=10)] = Field(default_factory=list)
    ceiling: Annotated[list[CapabilityKey], Field(max_length=500)] = Field(default_factory=list)
    dpop_bound_tokens_required: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> AgentSpec:
        if self.redirect_uris and self.kind == AgentKind.BACKGROUND:
            raise refuse(
                "a background agent has no redirect URIs (it uses client credentials)", where="redirect_uris"
            )
        if len(set(self.redirect_uris)) != len(self.redirect_uris):
            raise refuse("lists a redirect URI twice", where="redirect_uris")
        if self.token_endpoint_auth_method == "none":
            if self.kind == AgentKind.BACKGROUND:
                raise refuse(
                    "a background agent authenticates with its key; only interactive agents can be "
                    "public clients",
                    where="token_endpoint_auth_method",
                )
            if self.jwks or self.jwks_uri:
                raise refuse("a public client (none) has no keys", where="jwks")
        return self

    def ceiling_entries(self) -> list[tuple[str, str]]:
        """(path, capability key) of each ceiling entry."""
        where = join(self.path, "ceiling")
        return [(join(where, index), key) for index, key in enumerate(self.ceiling)]


class GrantSpec(Scoped):
    agent: Name
    capability: CapabilityKey
    user: Username | None = None
    expires_at: Timestamp | None = None
    reason: Reason = ""
    revoked: bool = False
    revoke_reason: Reason = ""

    @property
    def identity(self) -> tuple[str, str, str, str | None]:
        return (self.organization, self.agent, self.capability, self.user)


class PolicySpec(Entry):
    version: int
    organizations: Annotated[list[OrganizationSpec], Field(max_length=100)] = Field(default_factory=list)
    users: Annotated[list[UserSpec], Field(max_length=MAX_ENTRIES)] = Field(default_factory=list)
    tool_servers: Annotated[list[ToolServerSpec], Field(max_length=MAX_ENTRIES)] = Field(default_factory=list)
    agents: Annotated[list[AgentSpec], Field(max_length=MAX_ENTRIES)] = Field(default_factory=list)
    grants: Annotated[list[GrantSpec], Field(max_length=10 * MAX_ENTRIES)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _version(self) -> PolicySpec:
        if self.version != VERSION:
            raise refuse(f"must be {VERSION}", where="version")
        return self


ENTRY_LISTS = ("users", "tool_servers", "agents", "grants")


def read_spec(data) -> tuple[PolicySpec, list[Problem]]:
    """Check the shape of a parsed file; return the spec and every problem found."""
    if data is None:
        return PolicySpec(version=VERSION), [Problem("", "the file is empty")]
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        return PolicySpec(version=VERSION), problems_of(exc)
    problems = _settle(spec)
    if not problems:
        problems = _duplicates(spec)
    return spec, problems


def _settle(spec: PolicySpec) -> list[Problem]:
    """Give each entry its path and its organization (the file's only one when it names none)."""
    problems = []
    default_org = spec.organizations[0].slug if len(spec.organizations) == 1 else None
    for index, organization in enumerate(spec.organizations):
        organization._path = join("organizations", index)
    for name in ENTRY_LISTS:
        for index, entry in enumerate(getattr(spec, name)):
            entry._path = join(name, index)
            if entry.organization is None:
                if default_org is None:
                    problems.append(
                        Problem(
                            join(entry.path, "organization"),
                            "is required when the file does not declare exactly one organization",
                        )
                    )
                entry.organization = default_org
    for server in spec.tool_servers:
        for index, capability in enumerate(server.capabilities):
            capability._path = join(join(server.path, "capabilities"), index)
    return problems


def _duplicates(spec: PolicySpec) -> list[Problem]:
    problems = []

    def once(entries, identity, what):
        seen: dict = {}
        for entry in entries:
            key = identity(entry)
            if key is None:
                continue
            if key in seen:
                problems.append(Problem(entry.path, f"repeats the {what} of {seen[key]}"))
            else:
                seen[key] = entry.path

    once(spec.organizations, lambda o: o.slug, "slug")
    once(spec.users, lambda u: u.username, "username")
    once(spec.tool_servers, lambda t: (t.organization, t.name), "name")
    once(spec.tool_servers, lambda t: t.audience, "audience")
    keys: dict = {}
    for server in spec.tool_servers:
        for capability in server.capabilities:
            first = keys.setdefault((server.organization, capability.key), capability.path)
            if first != capability.path:
                problems.append(
                    Problem(
                        capability.path,
                        f"repeats the capability key of {first} (keys are unique in an organization)",
                    )
                )
    once(spec.agents, lambda a: (a.organization, a.name), "name")
    clients = [*spec.agents, *spec.tool_servers]
    once(clients, lambda c: c.client_id, "client_id")
    once(spec.grants, lambda g: g.identity, "agent, capability and user")
    for agent in spec.agents:
        seen: dict = {}
        for path, key in agent.ceiling_entries():
            if key in seen:
                problems.append(Problem(path, f"repeats {key} (first at {seen[key]})"))
            seen.setdefault(key, path)
    return problems


# Pydantic's errors, in the file's words -------------------------------------------------------------------

MESSAGES = {
    "missing": "is required",
    "int_type": "must be a whole number, not {type}",
    "bool_type": "must be true or false, not {type}",
    "string_type": "must be a string, not {type}",
    "dict_type": "must be a mapping, not {type}",
    "model_type": "must be a mapping, not {type}",
    "list_type": "must be a list, not {type}",
    "datetime_type": "must be a timestamp with a time zone, not {type}",
    "greater_than_equal": "must be at least {ge}",
    "too_short": "must not be empty",
    "too_long": "holds {actual_length} entries; at most {max_length} are allowed",
    "invalid_key": "keys must be strings, not {type}",
}


def problems_of(error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        loc = [part for part in item["loc"] if part != "[key]"]
        path = ""
        for part in loc:
            path = join(path, part)
        kind, ctx, value = item["type"], item.get("ctx") or {}, item.get("input")
        if kind == "policy":
            reason = ctx["reason"]
            path = join(path, ctx["where"]) if ctx.get("where") else path
        elif kind == "extra_forbidden":
            allowed = _keys_at(PolicySpec, loc[:-1])
            reason = "unknown key" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
        elif kind == "literal_error":
            reason = f"{show(value)} is not one of: {_choices(ctx.get('expected', ''))}"
        elif kind in MESSAGES:
            reason = MESSAGES[kind].format(type=type_name(value), **ctx)
        else:
            reason = item["msg"]
        problems.append(Problem(path, reason))
    return problems


def _choices(expected: str) -> str:
    # pydantic says "'a', 'b' or 'c'"; the file's users read "a, b, c".
    return ", ".join(part.strip(" '") for part in expected.replace(" or ", ", ").split(","))


def _keys_at(model: type, loc: list) -> list[str]:
    """The keys a mapping at ``loc`` may hold, found by walking the models' annotations."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is list and isinstance(part, int):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(field.alias or name for name, field in current.model_fields.items())
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            annotation = members[0] if len(members) == 1 else annotation
            if len(members) != 1:
                return annotation
        else:
            return annotation


__all__ = [
    "AgentSpec",
    "CapabilitySpec",
    "GrantSpec",
    "OrganizationSpec",
    "PolicySpec",
    "ToolServerSpec",
    "UserSpec",
    "read_spec",
]
