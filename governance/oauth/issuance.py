"""The broker's decisions at the authorization and token endpoints, and what is stored and audited.

Rules only: no oauthlib, no HTTP.  The adapters to django-oauth-toolkit (:mod:`governance.oauth.grants`)
and the direct path call them with what the request carries and turn a :class:`Refusal` into the answer.

* :func:`authorize`: at the authorization endpoint, an active interactive agent, one registered
  ``resource``, and only capabilities inside the agent's ceiling on that audience;
* :func:`decide`: at the token endpoint, the same audience rules, then :func:`scoping.evaluate_for_resource`
  — every capability covered by an active grant, else ``invalid_scope`` described as an elevation attempt;
  on refresh a lapsed grant fails the refresh (``invalid_grant``, ``lapsed``: the caller revokes the family);
  then step-up.  It returns the :class:`Issued` that is signed, stored and audited.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from audit.actions import Action
from governance import auth_levels
from governance.conf import gatehouse_settings
from governance.models import Agent, TokenRecord, ToolServer, User
from governance.models.agents import AgentKind
from governance.oauth import jwt_tokens, step_up, token_dpop
from governance.oauth.issued import Issued
from governance.oauth.principals import principal_for
from governance.oauth.refusals import Refusal, RefusalEvent
from governance.oauth.scoping import (
    ScopeDecision,
    evaluate_for_resource,
    evaluate_request,
    parse_scope,
    resolve_audience,
)


def requesting_agent(application) -> Agent:
    """The active agent behind the authenticated client; anything else is ``unauthorized_client``."""
    principal = principal_for(application)
    if not isinstance(principal, Agent):
        raise Refusal("unauthorized_client", "Only agents receive tokens here.")
    if not principal.is_active:
        raise Refusal(
            "unauthorized_client",
            "This client may not receive tokens.",
            reason=f"agent is {principal.status}",
        )
    return principal


def _elevation(agent: Agent, user, server: ToolServer, decision: ScopeDecision, *, grant_type, stage: str):
    return RefusalEvent(
        action=Action.ELEVATION_ATTEMPTED,
        error="invalid_scope",
        agent=agent,
        user=user,
        audience=server.audience,
        capabilities=decision.requested,
        parameters={
            "stage": stage,
            "grant_type": grant_type or "authorization",
            "requested": decision.requested,
            "allowed": decision.allowed,
            "outside_ceiling": decision.outside_ceiling,
            "needs_approval": decision.needs_approval,
        },
    )


def authorize(
    *, agent: Agent, user: User | None, resources: list[str], scopes: list[str], dpop_jkt=None
) -> ToolServer:
    """The authorization endpoint's rule before consent: refuse early what no consent could make valid."""
    if agent.kind != AgentKind.INTERACTIVE:
        raise Refusal("unauthorized_client", "A background agent uses client credentials.")
    token_dpop.authorization_dpop_jkt(dpop_jkt)  # a malformed dpop_jkt is refused before consent
    server = resolve_audience(resources, agent=agent)
    requested = parse_scope(" ".join(scopes))
    decision = evaluate_request(agent=agent, user=user, audience=server, requested=requested)
    if decision.outside_ceiling:
        raise Refusal(
            "invalid_scope",
            "A requested capability is outside this agent's ceiling.",
            reason="capabilities beyond the grants were requested",
            event=_elevation(agent, user, server, decision, grant_type=None, stage="authorization"),
        )
    return server


def decide(
    *,
    agent: Agent,
    grant_type: str,
    requested: list[str],
    resources: list[str],
    user: User | None,
    allowed_resources: list[str] | None = None,
    proof_jkt: str = "",
    authentication: step_up.UserAuthentication | None = None,
    check_age: bool = False,
    covering: dict | None = None,
    now: datetime | None = None,
) -> Issued:
    """The token endpoint's decision: audience, capabilities, lifetime, key binding and step-up.

    ``agent`` is the authenticated, active agent; ``user`` whom the token acts for (None for client
    credentials); ``requested`` the capability keys; ``resources`` the RFC 8707 resources asked for and
    ``allowed_resources`` those of the original authorization (code, refresh token); ``proof_jkt`` the
    thumbprint of a verified DPoP proof's key; ``authentication`` the person's authentication the grant
    carries.  ``covering``: the covering grants (key -> grant) when the caller read them already, as the
    direct path does in its one statement.  Raises :class:`Refusal`; nothing is issued unless every rule
    holds.  Every grant type calls it (token exchange through :func:`conclude`, after its narrowing).
    """
    now = now or timezone.now()
    if grant_type == "client_credentials" and agent.kind != AgentKind.BACKGROUND:
        raise Refusal("unauthorized_client", "Interactive agents act for a user.")
    if allowed_resources is not None:
        if resources and any(r not in allowed_resources for r in resources):
            raise Refusal(
                "invalid_target",
                "The resource was not part of the authorization.",
                reason="resource beyond the original authorization",
            )
        resources = resources or allowed_resources
    # Audience and grants: one query when every capability is covered.
    server, decision = evaluate_for_resource(
        resources, agent=agent, user=user, requested=requested, grants=covering, now=now
    )
    if not decision.ok:
        if grant_type == "refresh_token":
            raise Refusal(
                "invalid_grant",
                "The grant behind this token is no longer active.",
                reason="a grant behind this refresh token has lapsed; the token family is revoked",
                lapsed=True,
                audience=server.audience,
            )
        raise Refusal(
            "invalid_scope",
            "The requested capabilities exceed what is granted.",
            reason="capabilities beyond the grants were requested",
            event=_elevation(agent, user, server, decision, grant_type=grant_type, stage="token"),
            audience=server.audience,
        )
    return conclude(
        agent=agent,
        user=user,
        server=server,
        decision=decision,
        grant_type=grant_type,
        proof_jkt=proof_jkt,
        authentication=authentication,
        check_age=check_age,
        now=now,
    )


def conclude(
    *,
    agent: Agent,
    user: User | None,
    server: ToolServer,
    decision: ScopeDecision,
    grant_type: str,
    proof_jkt: str = "",
    authentication: step_up.UserAuthentication | None = None,
    check_age: bool = False,
    now: datetime,
    expires_by: datetime | None = None,
    act: dict | None = None,
    action: Action | None = None,
    audit_parameters: dict | None = None,
) -> Issued:
    """The issuance for a decision whose capabilities are all allowed: lifetime (at most until
    ``expires_by``), key binding, step-up (``authentication`` must meet the capabilities; ``check_age``:
    also recently), and what the issue event adds (``action``; ``audit_parameters``, by default the key
    binding's thumbprint)."""
    lifetime = decision.lifetime_seconds
    if expires_by is not None:
        lifetime = min(lifetime, int((expires_by - now).total_seconds()))
        decision.lifetime_seconds = lifetime
    if audit_parameters is None:
        audit_parameters = {"cnf_jkt": proof_jkt} if proof_jkt else {}
    issued = Issued.starting(
        now=now,
        lifetime=lifetime,
        agent=agent,
        user=user,
        tool_server=server,
        decision=decision,
        grant_type=grant_type,
        cnf_jkt=proof_jkt,
        act=act,
        action=action,
        audit_parameters=audit_parameters,
    )
    # Step-up: the code's (refresh family's, subject token's) acr/auth_time must meet the capabilities.
    step_up.enforce(
        issued, authentication=authentication or step_up.UserAuthentication(), check_age=check_age
    )
    return issued


def sign(issued: Issued) -> str:
    """The RFC 9068 JWT for an issuance decided by :func:`decide` (or the direct path)."""
    claims = jwt_tokens.AccessTokenClaims(
        issuer=gatehouse_settings.ISSUER,
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
    if issued.authorization_details is not None:
        claims.extra["authorization_details"] = issued.authorization_details
    return jwt_tokens.sign(claims)


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
