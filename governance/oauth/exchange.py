"""RFC 8693 token exchange, for one thing only: an agent acting on behalf of a user.

An agent (the *actor*) authenticates itself as at any grant, presents a user's Gatehouse access token as
``subject_token`` and names one registered tool server (``resource`` and/or ``audience``).  It receives a
normal Gatehouse access token with ``sub`` = that user, ``client_id`` = the actor and
``act: {"sub": <actor>}``, nested over the subject token's own ``act``.  Every rule fails closed:

* the subject token must be active by the same code introspection uses (exact token value, unexpired,
  unrevoked, its agent and user active, its grants still covering it) and carry a user; the user is taken
  from it and never from a request parameter;
* the actor must be allowed to act for that user: the subject token's ``may_act`` names it, or an active grant
  exists for (user, actor) on the target audience;
* only narrowing: capabilities ⊆ the subject token's scope ∩ what the actor's grants cover on the target
  audience; lifetime ≤ the subject token's remaining time;
* a DPoP-bound subject (or actor) token needs a proof by the same key; the new token is bound to the proof.

Refusals are RFC 6749 JSON with the codes of RFC 8693 §2.2.2: a subject or actor token that is invalid or
unacceptable by policy is ``invalid_request``, an unusable target ``invalid_target``.  Rules only: the
grant handler oauthlib dispatches to is :class:`governance.oauth.grants.TokenExchangeGrant`.
"""

from __future__ import annotations

from django.utils import timezone

from audit.actions import Action
from governance.models import Agent, Grant, TokenRecord, ToolServer
from governance.models.agents import AgentKind
from governance.oauth import issuance, step_up
from governance.oauth.exchange_tokens import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    ActiveToken,
    actor_chain,
    actor_token,
    body_values,
    dpop_proof,
    parameters,
    refuse_request,
    subject_token,
)
from governance.oauth.refusals import Refusal, RefusalEvent
from governance.oauth.scoping import ScopeDecision, evaluate_request, parse_scope, resolve_audience
from governance.oauth.state import BrokerRequest

__all__ = ["ACCESS_TOKEN_TYPE", "GRANT_TYPE", "decide"]


def decide(
    state: BrokerRequest, *, actor: Agent, body: list[tuple[str, str]], headers: list[str], method: str
) -> issuance.Issued:
    """The exchange for the authenticated, active ``actor``: subject and actor tokens, proof, target,
    permission, scope and lifetime, in that order; raises :class:`Refusal`.  What it learns on the way (the
    user, the audience, the capabilities asked) goes on ``state`` for the audit."""
    if actor.kind != AgentKind.INTERACTIVE:
        raise refuse_request(
            "unauthorized_client",
            "Only an interactive agent acts on behalf of a user.",
            reason="a background agent may not act for a user",
        )
    params = parameters(body)
    subject = subject_token(params["subject_token"], state, actor=actor)
    actor_record = None
    if params.get("actor_token"):
        actor_record = actor_token(params["actor_token"], actor=actor)
    proof = dpop_proof(
        state, headers=headers, method=method, actor=actor, subject=subject.record, actor_record=actor_record
    )
    target = _target(state, body, actor=actor)
    decision = _decide(state, actor=actor, subject=subject, target=target, params=params)
    return _prepare(
        state,
        actor=actor,
        subject=subject.record,
        actor_record=actor_record,
        target=target,
        decision=decision,
        cnf_jkt=proof.jkt if proof is not None else "",
    )


def _target(state: BrokerRequest, body: list[tuple[str, str]], *, actor: Agent) -> ToolServer:
    """``resource`` and ``audience`` together must name exactly one registered tool server."""
    named = body_values(body, "resource") + body_values(body, "audience")
    target = resolve_audience(named, agent=actor)
    state.audience = target.audience
    return target


def _authorize_actor(actor: Agent, *, subject: ActiveToken, target: ToolServer, covered: bool) -> str:
    """The classic bug is an exchange that ignores who asks: the actor needs its own permission.

    ``covered``: some grant for (user, actor) on the target already covers a requested capability.
    Returns how the actor may act: "may_act" (the subject token names it) or "grant".
    """
    client_id = actor.application.client_id
    may_act = subject.claims.get("may_act")
    if isinstance(may_act, dict) and may_act.get("sub") == client_id:
        return "may_act"
    granted = (
        covered
        or Grant.objects.active()
        .filter(agent=actor, user=subject.record.user, capability__tool_server=target)
        .exists()
    )
    if not granted:
        raise refuse_request(
            "invalid_request",
            "This client may not act for the subject.",
            reason="no may_act naming the actor and no grant for this user and actor on the audience",
        )
    return "grant"


def _decide(
    state: BrokerRequest, *, actor: Agent, subject: ActiveToken, target: ToolServer, params: dict
) -> ScopeDecision:
    """Only narrowing: the subject token's scope ∩ the actor's grants for this user on the target."""
    record = subject.record
    try:
        requested = parse_scope(params.get("scope"))
    except Refusal as refusal:
        raise refuse_request("invalid_scope", refusal.description, reason=refusal.description) from None
    held = record.capability_keys
    explicit = bool(requested)
    candidates = requested if explicit else held
    state.capabilities = list(candidates)
    decision = evaluate_request(agent=actor, user=record.user, audience=target, requested=candidates)
    state.permission = _authorize_actor(actor, subject=subject, target=target, covered=bool(decision.grants))
    allowed = [key for key in decision.allowed if key in held]
    if explicit and len(allowed) != len(decision.requested):
        raise Refusal(
            "invalid_scope",
            "The requested capabilities exceed the subject token or the actor's grants.",
            reason="capabilities beyond the subject token or the actor's grants were requested",
            event=RefusalEvent(
                action=Action.ELEVATION_ATTEMPTED,
                error="invalid_scope",
                agent=actor,
                user=record.user,
                audience=target.audience,
                capabilities=decision.requested,
                parameters={
                    "stage": "token_exchange",
                    "grant_type": GRANT_TYPE,
                    "requested": decision.requested,
                    "allowed": allowed,
                    "subject_jti": record.jti,
                    "subject_scope": held,
                    "actor_chain": [actor.application.client_id, *actor_chain(record.act)],
                },
            ),
        )
    if not allowed:
        raise refuse_request(
            "invalid_scope",
            "No capability of the subject token is granted to this client on the target.",
            reason="the subject token and the actor's grants have no capability in common",
        )
    if explicit:
        return decision
    return ScopeDecision(
        requested=allowed,
        allowed=allowed,
        lifetime_seconds=decision.lifetime_seconds,
        grants=[g for g in decision.grants if g.capability.key in allowed],
    )


def _prepare(
    state: BrokerRequest,
    *,
    actor: Agent,
    subject: TokenRecord,
    actor_record: TokenRecord | None,
    target: ToolServer,
    decision: ScopeDecision,
    cnf_jkt: str,
) -> issuance.Issued:
    now = timezone.now()
    remaining = int((subject.expires_at - now).total_seconds())
    lifetime = min(decision.lifetime_seconds, remaining)
    if lifetime <= 0:
        raise refuse_request(
            "invalid_request", "The subject token is not active.", reason="the subject token expires now"
        )
    client_id = actor.application.client_id
    act = {"sub": client_id}
    if subject.act:
        act["act"] = subject.act
    audit_parameters = {
        "subject_jti": subject.jti,
        "subject_audience": subject.audience,
        "subject_client_id": subject.client_id,
        "actor_chain": actor_chain(act),
        "permission": state.permission,
        "dpop_bound": bool(cnf_jkt),
    }
    if actor_record is not None:
        audit_parameters["actor_jti"] = actor_record.jti
    # The one issuance decision's conclusion; step-up: the subject token's acr/auth_time travel on (an
    # exchange authenticates nobody) and must still meet the target capabilities, freshness included.
    return issuance.conclude(
        agent=actor,
        user=subject.user,
        server=target,
        decision=decision,
        grant_type=GRANT_TYPE,
        proof_jkt=cnf_jkt,
        authentication=step_up.UserAuthentication(acr=subject.acr, auth_time=subject.auth_time),
        check_age=True,
        now=now,
        expires_by=subject.expires_at,
        act=act,
        action=Action.TOKEN_EXCHANGED,
        audit_parameters=audit_parameters,
    )
