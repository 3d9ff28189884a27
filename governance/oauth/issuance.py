"""The broker's decisions at the authorization and token endpoints, and what is stored and audited.

Hooked into oauthlib's grant types by :class:`governance.oauth.server.GatehouseServer`:

* ``check_authorization`` (post_auth): an active interactive agent, one registered ``resource``, and only
  capabilities inside the agent's ceiling on that audience;
* ``check_token`` (post_token): the same audience rules, then :func:`scoping.evaluate_request` — every
  capability covered by an active grant, else ``invalid_scope`` audited as an elevation attempt; on refresh a
  lapsed grant fails the refresh and revokes the token family.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model, revoke_access_token
from oauthlib.oauth2.rfc6749 import errors

from audit import services as audit
from audit.actions import Action
from governance import auth_levels
from governance.models import Agent, TokenRecord, ToolServer, User
from governance.models.agents import AgentKind
from governance.oauth import context, dpop_http, issuance_queries, jwt_tokens, step_up
from governance.oauth.events import record_refusal
from governance.oauth.scoping import (
    BrokerRefusal,
    ScopeDecision,
    evaluate_for_resource,
    evaluate_request,
    parse_scope,
    resolve_audience,
)


@dataclass
class Issued:
    agent: Agent
    user: User | None
    tool_server: ToolServer
    decision: ScopeDecision
    jti: str
    issued_at: datetime
    expires_at: datetime
    grant_type: str
    act: dict | None = None  # RFC 8693 actor chain (token exchange)
    cnf_jkt: str = ""  # RFC 9449 key binding
    acr: str = ""  # the person's authentication level and time (step-up), carried from the code
    auth_time: datetime | None = None
    action: Action | None = None  # audit action; default token.issued / token.refreshed
    audit_parameters: dict = field(default_factory=dict)  # added to the issue event

    @classmethod
    def starting(cls, *, now: datetime, lifetime: int, **fields) -> Issued:
        """An issuance from ``now`` for ``lifetime`` seconds, under a fresh ``jti``."""
        expires_at = now + timedelta(seconds=lifetime)
        return cls(jti=uuid.uuid4().hex, issued_at=now, expires_at=expires_at, **fields)

    @property
    def subject(self) -> str:
        return str(self.user.pk) if self.user is not None else self.agent.application.client_id


def oauth_error(refusal: BrokerRefusal, request) -> errors.OAuth2Error:
    error = errors.CustomOAuth2Error(error=refusal.error, description=refusal.description, request=request)
    if refusal.error == "invalid_scope":
        error = errors.InvalidScopeError(description=refusal.description, request=request)
    return error


def _agent(request) -> Agent:
    from governance.oauth.validator import principal_for

    principal = principal_for(request.client)
    if not isinstance(principal, Agent):
        raise errors.UnauthorizedClientError(description="Only agents receive tokens here.", request=request)
    if not principal.is_active:
        context.note(reason=f"agent is {principal.status}")
        raise errors.UnauthorizedClientError(
            description="This client may not receive tokens.", request=request
        )
    return principal


def _resources(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [v for v in value if isinstance(v, str)]


def _body_resources(request) -> list[str]:
    return [value for key, value in (request.decoded_body or []) if key == "resource"]


def _elevation(agent: Agent, user, server: ToolServer, decision: ScopeDecision, request, *, stage: str):
    record_refusal(
        action=Action.ELEVATION_ATTEMPTED,
        error="invalid_scope",
        agent=agent,
        user=user,
        audience=server.audience,
        capabilities=decision.requested,
        parameters={
            "stage": stage,
            "grant_type": request.grant_type or "authorization",
            "requested": decision.requested,
            "allowed": decision.allowed,
            "outside_ceiling": decision.outside_ceiling,
            "needs_approval": decision.needs_approval,
        },
    )
    context.note(recorded=True, reason="capabilities beyond the grants were requested")


def check_authorization(request) -> dict:
    """post_auth: refuse early what no consent could make valid."""
    agent = _agent(request)
    if agent.kind != AgentKind.INTERACTIVE:
        raise errors.UnauthorizedClientError(
            description="A background agent uses client credentials.", request=request
        )
    dpop_http.authorization_dpop_jkt(request)  # a malformed dpop_jkt is refused before consent
    resources = _resources(request.resource)
    if not resources and request.uri:
        resources = [v for k, v in parse_qsl(urlsplit(request.uri).query) if k == "resource"]
    try:
        server = resolve_audience(resources, agent=agent)
        requested = parse_scope(" ".join(request.scopes or []))
    except BrokerRefusal as refusal:
        context.note(reason=refusal.description)
        raise oauth_error(refusal, request) from None
    context.note(audience=server.audience, capabilities=requested)
    user = request.user if isinstance(request.user, User) else None
    decision = evaluate_request(agent=agent, user=user, audience=server, requested=requested)
    if decision.outside_ceiling:
        _elevation(agent, user, server, decision, request, stage="authorization")
        raise errors.InvalidScopeError(
            description="A requested capability is outside this agent's ceiling.", request=request
        )
    request.resource = [server.audience]
    return {"resource": [server.audience]}


def check_token(request) -> None:
    """post_token: decide audience, capabilities and lifetime; nothing is issued unless all hold."""
    agent = _agent(request)
    grant_type = request.grant_type
    if grant_type == "client_credentials":
        if agent.kind != AgentKind.BACKGROUND:
            raise errors.UnauthorizedClientError(
                description="Interactive agents act for a user.", request=request
            )
        user, allowed_resources = None, None
    elif grant_type == "authorization_code":
        user, allowed_resources = request.user, _resources(getattr(request, "gatehouse_code_resource", []))
    else:
        rt = request.refresh_token_instance
        user, allowed_resources = request.user, list(rt.resource or [])
    context.note(user=user)
    requested_resources = _body_resources(request)
    if allowed_resources is not None:
        if requested_resources and any(r not in allowed_resources for r in requested_resources):
            context.note(reason="resource beyond the original authorization")
            raise errors.CustomOAuth2Error(
                error="invalid_target",
                request=request,
                description="The resource was not part of the authorization.",
            )
        requested_resources = requested_resources or allowed_resources
    requested = list(request.scopes or [])
    try:  # audience and grants: one query when every capability is covered
        server, decision = evaluate_for_resource(
            requested_resources, agent=agent, user=user, requested=requested
        )
    except BrokerRefusal as refusal:
        context.note(reason=refusal.description)
        raise oauth_error(refusal, request) from None
    context.note(audience=server.audience, capabilities=requested)
    if not decision.ok:
        if grant_type == "refresh_token":
            get_refresh_token_model().revoke_family(request.refresh_token_instance.token_family)
            context.note(reason="a grant behind this refresh token has lapsed; the token family is revoked")
            raise errors.InvalidGrantError(
                description="The grant behind this token is no longer active.", request=request
            )
        _elevation(agent, user, server, decision, request, stage="token")
        raise errors.InvalidScopeError(
            description="The requested capabilities exceed what is granted.", request=request
        )
    now = timezone.now()
    cnf_jkt = dpop_http.bound_jkt(request)  # verified by dpop_http.check_token_request, the hook before
    request.scopes = decision.allowed
    request.resource = [server.audience]
    request.gatehouse = Issued.starting(
        now=now,
        lifetime=decision.lifetime_seconds,
        agent=agent,
        user=user,
        tool_server=server,
        decision=decision,
        grant_type=grant_type,
        cnf_jkt=cnf_jkt,
        audit_parameters={"cnf_jkt": cnf_jkt} if cnf_jkt else {},
    )
    # Step-up: the code's (or refresh family's) acr/auth_time must meet the capabilities, and travel on.
    step_up.enforce(
        request,
        request.gatehouse,
        authentication=step_up.carried(request, grant_type),
        check_age=grant_type == "refresh_token",
    )


def expires_in(request) -> int:
    issued = getattr(request, "gatehouse", None)
    return issued.decision.lifetime_seconds if issued is not None else 0


def generate_access_token(request) -> str:
    return sign(request.gatehouse)


def sign(issued: Issued) -> str:
    """The RFC 9068 JWT for an issuance decided by :func:`check_token` (or the direct path)."""
    claims = jwt_tokens.AccessTokenClaims(
        issuer=settings.GATEHOUSE_ISSUER,
        subject=issued.subject,
        client_id=issued.agent.application.client_id,
        audience=issued.tool_server.audience,
        scope=issued.decision.allowed,
        issued_at=issued.issued_at,
        expires_at=issued.expires_at,
        jti=issued.jti,
        act=issued.act,
        cnf_jkt=issued.cnf_jkt,
        acr=issued.acr,
        auth_time=issued.auth_time,
        extra={"amr": auth_levels.AMR[issued.acr]} if issued.acr in auth_levels.AMR else {},
    )
    return jwt_tokens.sign(claims)


def create_record(*, access_token, issued: Issued, request) -> TokenRecord:
    record = token_record(access_token=access_token, issued=issued)
    issuance_queries.insert(record)  # the ORM's INSERT, its statement built once
    return record


def token_record(*, access_token, issued: Issued) -> TokenRecord:
    """The (unsaved) record of an issued token: what introspection, revocation and the audit read."""
    source = access_token.source_refresh_token
    family = source.token_family if source is not None else None
    return TokenRecord(access_token=access_token, **token_record_values(issued, token_family=family))


def token_record_values(issued: Issued, *, token_family=None) -> dict:
    """A :class:`TokenRecord`'s columns (by attribute name) for an issuance, less the access token's id."""
    return {
        "jti": issued.jti,
        "audience": issued.tool_server.audience,
        "tool_server_id": issued.tool_server.pk,
        "agent_id": issued.agent.pk,
        "user_id": issued.user.pk if issued.user is not None else None,
        "subject": issued.subject,
        "client_id": issued.agent.application.client_id,
        "capabilities": " ".join(issued.decision.allowed),
        "grant_type": issued.grant_type,
        "token_family": token_family,
        "act": issued.act,
        "cnf_jkt": issued.cnf_jkt,
        "acr": issued.acr,
        "auth_time": issued.auth_time,
        "issued_at": issued.issued_at,
        "expires_at": issued.expires_at,
    }


def record_issue(token: dict, request) -> None:
    """Inside DOT's save transaction: one event for the issued token (never its value)."""
    issued: Issued | None = getattr(request, "gatehouse", None)
    if issued is None:
        return
    audit.record(**issue_event(issued, refresh_token_issued="refresh_token" in token))


def issue_event(issued: Issued, *, refresh_token_issued: bool) -> dict:
    """The ``audit.record`` arguments describing an issued token: identifiers and keys, never its value."""
    refreshed = issued.grant_type == "refresh_token"
    return dict(
        action=issued.action or (Action.TOKEN_REFRESHED if refreshed else Action.TOKEN_ISSUED),
        actor=issued.agent,
        agent=issued.agent,
        on_behalf_of=issued.user,
        capabilities=issued.decision.allowed,
        parameters={
            "jti": issued.jti,
            "grant_type": issued.grant_type,
            "audience": issued.tool_server.audience,
            "expires_in": issued.decision.lifetime_seconds,
            "refresh_token_issued": refresh_token_issued,
            "grants": sorted(g.pk for g in issued.decision.grants),
            **issued.audit_parameters,
        },
    )


def revoke(token: str, request) -> None:
    """RFC 7009 for the authenticated client only; a refresh token takes its whole family with it."""
    application = request.client
    if application is None or getattr(application, "pk", None) is None or not isinstance(token, str):
        return
    checksum = hashlib.sha256(token.encode()).hexdigest()
    hint = request.token_type_hint
    access = get_access_token_model().objects.filter(token_checksum=checksum, application=application)
    refresh = get_refresh_token_model().objects.filter(token_checksum=checksum, application=application)
    order = (refresh, access) if hint == "refresh_token" else (access, refresh)
    found = next((qs.select_related("user").first() for qs in order if qs.exists()), None)
    if found is None:
        return
    from governance.oauth.validator import principal_for

    agent = principal_for(application) if isinstance(principal_for(application), Agent) else None
    with transaction.atomic():
        if isinstance(found, get_access_token_model()):
            record = TokenRecord.objects.filter(access_token=found).first()
            parameters = {"token_type": "access_token", "jti": record.jti if record else ""}
            capabilities = record.capability_keys if record else found.scope.split()
            revoke_access_token(found)
        else:
            parameters = {"token_type": "refresh_token", "token_family": str(found.token_family or "")}
            capabilities = []
            get_refresh_token_model().revoke_family(
                found.token_family
            ) if found.token_family else found.revoke()
        audit.record(
            action=Action.TOKEN_REVOKED,
            actor=agent,
            agent=agent,
            on_behalf_of=found.user,
            capabilities=capabilities,
            parameters={**parameters, "audience": " ".join(found.resource or [])},
        )
