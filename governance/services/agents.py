"""Agents: identity, keys, ceiling and the lifecycle (activate, suspend, reactivate, retire)."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import get_application_model
from oauth2_provider.validators import AllowedURIValidator

from audit import services as audit
from audit.actions import Action
from governance.errors import Conflict, InvalidInput, InvalidState
from governance.keys import validate_public_jwks
from governance.models import Agent, Capability, Grant, Organization, User
from governance.models.agents import AgentKind, AgentStatus, TokenEndpointAuthMethod
from governance.services._common import (
    Principal,
    apply_changes,
    database_rules,
    ensure_can_manage,
    reverted_on_error,
    validate,
)
from governance.services.tokens import revoke_application_tokens
from governance.text import client_id_problem


def _check_ceiling(organization: Organization, capabilities: Iterable[Capability]) -> list[Capability]:
    capabilities = list(capabilities)
    foreign = [c.key for c in capabilities if c.tool_server.organization_id != organization.pk]
    if foreign:
        raise InvalidInput(
            f"The ceiling may only hold this organization's capabilities, not {', '.join(sorted(foreign))}.",
            errors={"ceiling": ["capability of another organization"]},
        )
    return capabilities


# Outside DEBUG, http redirect URIs only for native apps' loopback listeners (RFC 8252 §7.3).
LOOPBACK = {"127.0.0.1", "::1"}


def _check_redirect_uris(kind: str, redirect_uris: list[str]) -> list[str]:
    """Absolute redirect URIs, allowed scheme (https in production), no fragment: as DOT checks them."""
    if kind == AgentKind.BACKGROUND and redirect_uris:
        raise InvalidInput("A background agent has no redirect URIs; it uses client credentials.")
    schemes = get_application_model()().get_allowed_schemes()
    validator = AllowedURIValidator(schemes, name="redirect URI", allow_path=True, allow_query=True)
    for uri in redirect_uris:
        try:
            validator(uri)
            parts = urlsplit(uri)
            if not settings.DEBUG and parts.scheme == "http" and parts.hostname not in LOOPBACK:
                raise ValidationError("http only for loopback")
        except ValidationError:
            raise InvalidInput(
                "Each redirect URI must be an absolute https URI without a fragment"
                " (http only for a loopback address).",
                errors={"redirect_uris": ["invalid redirect URI"]},
            ) from None
    return redirect_uris


def _new_application(
    *, name: str, kind: str, owner: User, redirect_uris: str, client_id: str | None, public: bool
):
    Application = get_application_model()
    grant_type = (
        Application.GRANT_AUTHORIZATION_CODE
        if kind == AgentKind.INTERACTIVE
        else Application.GRANT_CLIENT_CREDENTIALS
    )
    # The generated secret is hashed and shown to nobody: agents authenticate with private_key_jwt, or not at
    # all (public clients, PKCE only).
    application = Application(
        name=name[:255],
        user=owner,
        client_type=Application.CLIENT_PUBLIC if public else Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=grant_type,
        redirect_uris=redirect_uris,
        skip_authorization=False,
    )
    if client_id is not None:
        application.client_id = client_id
    application.save()
    return application


# How an agent created here authenticates: its key, or nothing (a public client: desktop and command-line
# agents, PKCE only).  Secret-based agents come only from dynamic registration, which hands out the secret.
AGENT_AUTH_METHODS = (TokenEndpointAuthMethod.PRIVATE_KEY_JWT, TokenEndpointAuthMethod.NONE)


def _check_auth_method(kind: str, method: str, *, jwks: dict, jwks_uri: str) -> None:
    if method not in AGENT_AUTH_METHODS:
        raise InvalidInput(
            f"An agent authenticates with {' or '.join(AGENT_AUTH_METHODS)}.",
            errors={"token_endpoint_auth_method": ["unsupported here"]},
        )
    if method == TokenEndpointAuthMethod.NONE:
        if kind != AgentKind.INTERACTIVE:
            raise InvalidInput(
                "Only an interactive agent can be a public client; a background agent uses its key.",
                errors={"token_endpoint_auth_method": ["background agents are confidential"]},
            )
        if jwks or jwks_uri:
            raise InvalidInput(
                "A public client has no keys; remove jwks and jwks_uri.",
                errors={"jwks": ["public client"]},
            )


def check_client_id(client_id: str, *, application=None) -> str:
    """A client id chosen by an admin or a policy file: the shape rule, and not taken by another client."""
    problem = client_id_problem(client_id)
    if problem:
        raise InvalidInput(f"client_id: {problem}", errors={"client_id": [problem]})
    taken = get_application_model().objects.filter(client_id=client_id)
    if application is not None:
        taken = taken.exclude(pk=application.pk)
    if taken.exists():
        raise Conflict(
            "client_id: another client already uses this client id.", errors={"client_id": ["taken"]}
        )
    return client_id


def agent_create(
    *,
    actor: Principal,
    organization: Organization,
    name: str,
    kind: str,
    owner: User,
    description: str = "",
    jwks: dict | str | None = None,
    jwks_uri: str = "",
    ceiling: Iterable[Capability] = (),
    redirect_uris: Iterable[str] = (),
    status: str = AgentStatus.ACTIVE,
    dpop_bound_tokens_required: bool = False,
    token_endpoint_auth_method: str = TokenEndpointAuthMethod.PRIVATE_KEY_JWT,
    client_id: str | None = None,
) -> Agent:
    """An agent and its OAuth client (with ``client_id`` when given, else a generated one)."""
    ensure_can_manage(actor, organization)
    if kind not in AgentKind.values:
        raise InvalidInput(f"Unknown agent kind {kind!r}; use interactive or background.")
    if status not in (AgentStatus.ACTIVE, AgentStatus.PENDING):
        raise InvalidInput("A new agent starts active or pending.")
    _check_owner(owner, organization.pk)
    redirect_uris = _check_redirect_uris(kind, list(redirect_uris))
    capabilities = _check_ceiling(organization, ceiling)
    jwks = validate_public_jwks(jwks)
    _check_auth_method(kind, token_endpoint_auth_method, jwks=jwks, jwks_uri=jwks_uri)
    if client_id is not None:
        check_client_id(client_id)
    agent = Agent(
        organization=organization,
        name=name,
        kind=kind,
        owner=owner,
        description=description,
        jwks=jwks,
        jwks_uri=jwks_uri,
        status=status,
        dpop_bound_tokens_required=dpop_bound_tokens_required,
        token_endpoint_auth_method=token_endpoint_auth_method,
    )
    validate(agent, exclude=["application"])
    with database_rules(), transaction.atomic():
        agent.application = _new_application(
            name=name,
            kind=kind,
            owner=owner,
            redirect_uris=" ".join(redirect_uris),
            client_id=client_id,
            public=token_endpoint_auth_method == TokenEndpointAuthMethod.NONE,
        )
        agent.save()
        agent.ceiling.set(capabilities)
        audit.record(
            action=Action.AGENT_CREATED,
            actor=actor,
            organization=organization,
            agent=agent,
            target=agent,
            capabilities=[c.key for c in capabilities],
            parameters={
                "name": name,
                "kind": kind,
                "status": status,
                "owner": owner.username,
                "client_id": agent.application.client_id,
                "key_ids": _key_ids(agent.jwks),
                "jwks_uri": jwks_uri,
                "redirect_uris": redirect_uris,
                "dpop_bound_tokens_required": dpop_bound_tokens_required,
                "token_endpoint_auth_method": token_endpoint_auth_method,
            },
        )
    return agent


def _check_owner(owner: User, organization_id: int) -> None:
    if owner.organization_id != organization_id or not owner.is_active:
        raise InvalidInput(
            "The owner must be an active user of the agent's organization.", errors={"owner": ["other org"]}
        )


def _key_ids(jwks: dict) -> list[str]:
    return [key.get("kid", "?") for key in jwks.get("keys", [])]


def agent_update(*, actor: Principal, agent: Agent, **changes) -> Agent:
    """Change an agent's name, description, owner, keys, redirect URIs, client id or how it authenticates
    (its key, or none: a public client); no change, nothing written."""
    ensure_can_manage(actor, agent.organization)
    redirect_uris = changes.pop("redirect_uris", None)
    client_id = changes.pop("client_id", None)
    if "jwks" in changes:
        changes["jwks"] = validate_public_jwks(changes["jwks"])
    if "owner" in changes:
        _check_owner(changes["owner"], agent.organization_id)
    application = agent.application
    if redirect_uris is not None:
        redirect_uris = _check_redirect_uris(agent.kind, list(redirect_uris))
    if client_id is not None and application is not None and client_id != application.client_id:
        check_client_id(client_id, application=application)
    else:
        client_id = None
    editable = {
        "name",
        "description",
        "owner",
        "jwks",
        "jwks_uri",
        "dpop_bound_tokens_required",
        "token_endpoint_auth_method",
    }
    fields = [f for f in changes if f in editable]
    with reverted_on_error(agent, fields):
        diff = apply_changes(agent, changes, allowed=editable)
        joined = None if redirect_uris is None else " ".join(redirect_uris)
        if application is not None and joined is not None and joined != application.redirect_uris:
            diff["redirect_uris"] = [application.redirect_uris.split(), redirect_uris]
        if client_id is not None:
            diff["client_id"] = [application.client_id, client_id]
        if not diff:
            return agent
        method = agent.token_endpoint_auth_method
        if "token_endpoint_auth_method" in diff or (
            method == TokenEndpointAuthMethod.NONE and {"jwks", "jwks_uri"} & set(diff)
        ):
            _check_auth_method(agent.kind, method, jwks=agent.jwks, jwks_uri=agent.jwks_uri)
        validate(agent, exclude=["application"])
        if "jwks" in diff:
            diff["jwks"] = [_key_ids(diff["jwks"][0] or {}), _key_ids(diff["jwks"][1] or {})]
        action = Action.AGENT_KEYS_CHANGED if set(diff) <= {"jwks", "jwks_uri"} else Action.AGENT_UPDATED
        carried = {"redirect_uris", "client_id", "token_endpoint_auth_method"} & set(diff)
        restore = ["redirect_uris", "client_id", "client_type"]
        undo = reverted_on_error(application, restore) if carried else nullcontext()
        with undo, database_rules(), transaction.atomic():
            agent.save()
            if carried:
                _update_application(application, diff, joined, method)
            audit.record(action=action, actor=actor, agent=agent, target=agent, parameters={"changes": diff})
    return agent


def _update_application(application, diff: dict, redirect_uris: str | None, method: str) -> None:
    """Carry an agent's change to its DOT application: redirect URIs, client id, public or confidential."""
    Application = get_application_model()
    fields = ["updated"]
    if "redirect_uris" in diff:
        application.redirect_uris = redirect_uris
        fields.append("redirect_uris")
    if "client_id" in diff:
        application.client_id = diff["client_id"][1]
        fields.append("client_id")
    if "token_endpoint_auth_method" in diff:
        public = method == TokenEndpointAuthMethod.NONE
        application.client_type = Application.CLIENT_PUBLIC if public else Application.CLIENT_CONFIDENTIAL
        fields.append("client_type")
    application.save(update_fields=fields)


def agent_set_ceiling(*, actor: Principal, agent: Agent, capabilities: Iterable[Capability]) -> Agent:
    """Replace the agent's ceiling.  Removing a capability that open grants use is refused."""
    ensure_can_manage(actor, agent.organization)
    wanted = {c.pk: c for c in _check_ceiling(agent.organization, capabilities)}
    current = {c.pk: c for c in agent.ceiling.select_related("tool_server")}
    added = [wanted[pk] for pk in wanted.keys() - current.keys()]
    removed = [current[pk] for pk in current.keys() - wanted.keys()]
    if not added and not removed:
        return agent
    in_use = sorted(
        Grant.objects.filter(agent=agent, capability__in=removed, revoked_at__isnull=True)
        .values_list("capability__key", flat=True)
        .distinct()
    )
    if in_use:
        raise Conflict(f"Revoke the open grants before removing {', '.join(in_use)} from the ceiling.")
    with database_rules(), transaction.atomic():
        agent.ceiling.remove(*removed)
        agent.ceiling.add(*added)
        audit.record(
            action=Action.AGENT_CEILING_CHANGED,
            actor=actor,
            agent=agent,
            target=agent,
            capabilities=[c.key for c in added + removed],
            parameters={"added": sorted(c.key for c in added), "removed": sorted(c.key for c in removed)},
        )
    return agent


def _transition(
    *,
    actor: Principal,
    agent: Agent,
    action: Action,
    allowed_from: set[str],
    to: str,
    reason: str,
    revoke_tokens: bool,
    close_grants: bool = False,
) -> Agent:
    ensure_can_manage(actor, agent.organization)
    # Lock the row: two admins suspending and reactivating at once must not interleave.
    with database_rules(), transaction.atomic():
        locked = Agent.objects.select_for_update(of=("self",)).select_related("application").get(pk=agent.pk)
        if locked.status not in allowed_from:
            raise InvalidState(f"The agent is {locked.status}; it cannot become {to}.")
        previous = locked.status
        locked.status = to
        locked.status_reason = reason
        locked.save(update_fields=["status", "status_reason", "updated_at"])
        parameters: dict = {"from": previous, "to": to, "reason": reason}
        if revoke_tokens:
            parameters["revoked"] = revoke_application_tokens(locked.application)
        if close_grants:
            parameters["grants_revoked"] = Grant.objects.filter(agent=locked, revoked_at__isnull=True).update(
                revoked_at=timezone.now(),
                revoked_by=actor if isinstance(actor, User) else None,
                revoke_reason=f"agent retired: {reason}"[:1000],
            )
        audit.record(action=action, actor=actor, agent=locked, target=locked, parameters=parameters)
    agent.status, agent.status_reason = locked.status, locked.status_reason
    return agent


def agent_activate(*, actor: Principal, agent: Agent, reason: str = "") -> Agent:
    """A pending agent (from dynamic registration) becomes active after an admin looked at it."""
    return _transition(
        actor=actor,
        agent=agent,
        action=Action.AGENT_ACTIVATED,
        allowed_from={AgentStatus.PENDING},
        to=AgentStatus.ACTIVE,
        reason=reason,
        revoke_tokens=False,
    )


def agent_suspend(*, actor: Principal, agent: Agent, reason: str) -> Agent:
    """The kill switch: the agent gets nothing more, and every token it holds stops working now."""
    return _transition(
        actor=actor,
        agent=agent,
        action=Action.AGENT_SUSPENDED,
        allowed_from={AgentStatus.ACTIVE, AgentStatus.PENDING},
        to=AgentStatus.SUSPENDED,
        reason=reason,
        revoke_tokens=True,
    )


def agent_reactivate(*, actor: Principal, agent: Agent, reason: str) -> Agent:
    return _transition(
        actor=actor,
        agent=agent,
        action=Action.AGENT_REACTIVATED,
        allowed_from={AgentStatus.SUSPENDED},
        to=AgentStatus.ACTIVE,
        reason=reason,
        revoke_tokens=False,
    )


def agent_retire(*, actor: Principal, agent: Agent, reason: str) -> Agent:
    """Permanent: tokens revoked, open grants closed, no way back."""
    return _transition(
        actor=actor,
        agent=agent,
        action=Action.AGENT_RETIRED,
        allowed_from={AgentStatus.ACTIVE, AgentStatus.PENDING, AgentStatus.SUSPENDED},
        to=AgentStatus.RETIRED,
        reason=reason,
        revoke_tokens=True,
        close_grants=True,
    )
