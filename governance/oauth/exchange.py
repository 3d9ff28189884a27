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
unacceptable by policy is ``invalid_request``, an unusable target ``invalid_target``.
"""

from __future__ import annotations

import json

from django.utils import timezone
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.base import GrantTypeBase

from audit.actions import Action
from governance.models import Agent, Grant, TokenRecord, ToolServer
from governance.models.agents import AgentKind
from governance.oauth import context, issuance, step_up
from governance.oauth.events import record_refusal
from governance.oauth.exchange_tokens import (
    ACCESS_TOKEN_TYPE,
    SINGLE_VALUED,
    ActiveToken,
    actor_chain,
    actor_token,
    body_values,
    dpop_proof,
    parameters,
    refuse_request,
    subject_token,
)
from governance.oauth.scoping import (
    BrokerRefusal,
    ScopeDecision,
    evaluate_request,
    parse_scope,
    resolve_audience,
)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"


class TokenExchangeGrant(GrantTypeBase):
    """The grant type oauthlib dispatches ``urn:ietf:params:oauth:grant-type:token-exchange`` to."""

    def create_token_response(self, request, token_handler):
        headers = self._get_default_headers()
        try:
            self.validate_token_request(request)
        except errors.OAuth2Error as exc:
            headers.update(exc.headers)
            return headers, exc.json, exc.status_code
        token = token_handler.create_token(request, refresh_token=False)
        token.pop("refresh_token", None)
        token["issued_token_type"] = ACCESS_TOKEN_TYPE  # token_type (Bearer or DPoP) is the token handler's
        self.request_validator.save_token(token, request)
        return headers, json.dumps(token), 200

    # ---- the request: client, shape, tokens, proof, target, permission, scope, lifetime ------------------
    def validate_token_request(self, request) -> None:
        if request.grant_type != GRANT_TYPE:
            raise errors.UnsupportedGrantTypeError(request=request)
        # A backstop: the view already refuses repeats, which DOT would otherwise reduce to the last value.
        for name in SINGLE_VALUED:
            if name in request.duplicate_params:
                raise refuse_request(
                    "invalid_request",
                    "A parameter that may appear once was repeated.",
                    request,
                    reason="repeated parameter",
                )
        # The actor always authenticates itself (private_key_jwt, or its configured secret method).
        if not self.request_validator.authenticate_client(request):
            context.note(reason=context.trace().reason or "client authentication failed")
            raise errors.InvalidClientError(request=request)
        request.client_id = request.client_id or request.client.client_id
        if not self.request_validator.validate_grant_type(
            request.client_id, request.grant_type, request.client, request
        ):
            raise errors.UnauthorizedClientError(request=request)
        actor = issuance._agent(request)
        if actor.kind != AgentKind.INTERACTIVE:
            raise refuse_request(
                "unauthorized_client",
                "Only an interactive agent acts on behalf of a user.",
                request,
                reason="a background agent may not act for a user",
            )
        params = parameters(request)
        subject = subject_token(params["subject_token"], request, actor=actor)
        actor_record = None
        if params.get("actor_token"):
            actor_record = actor_token(params["actor_token"], request, actor=actor)
        proof = dpop_proof(request, actor=actor, subject=subject.record, actor_record=actor_record)
        target = self._target(request, actor=actor)
        decision = self._decide(request, actor=actor, subject=subject, target=target, params=params)
        self._prepare(
            request,
            actor=actor,
            subject=subject.record,
            actor_record=actor_record,
            target=target,
            decision=decision,
            cnf_jkt=proof.jkt if proof is not None else "",
        )

    def _target(self, request, *, actor: Agent) -> ToolServer:
        """``resource`` and ``audience`` together must name exactly one registered tool server."""
        named = body_values(request, "resource") + body_values(request, "audience")
        try:
            target = resolve_audience(named, agent=actor)
        except BrokerRefusal as refusal:
            context.note(reason=refusal.description)
            raise issuance.oauth_error(refusal, request) from None
        context.note(audience=target.audience)
        return target

    def _authorize_actor(
        self, request, *, actor: Agent, subject: ActiveToken, target: ToolServer, covered: bool
    ) -> None:
        """The classic bug is an exchange that ignores who asks: the actor needs its own permission.

        ``covered``: some grant for (user, actor) on the target already covers a requested capability.
        """
        client_id = actor.application.client_id
        may_act = subject.claims.get("may_act")
        if isinstance(may_act, dict) and may_act.get("sub") == client_id:
            request.gatehouse_permission = "may_act"
            return
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
                request,
                reason="no may_act naming the actor and no grant for this user and actor on the audience",
            )
        request.gatehouse_permission = "grant"

    def _decide(
        self, request, *, actor: Agent, subject: ActiveToken, target: ToolServer, params: dict
    ) -> ScopeDecision:
        """Only narrowing: the subject token's scope ∩ the actor's grants for this user on the target."""
        record = subject.record
        try:
            requested = parse_scope(params.get("scope"))
        except BrokerRefusal as refusal:
            raise refuse_request(
                "invalid_scope", refusal.description, request, reason=refusal.description
            ) from None
        held = record.capability_keys
        explicit = bool(requested)
        candidates = requested if explicit else held
        context.note(capabilities=candidates)
        decision = evaluate_request(agent=actor, user=record.user, audience=target, requested=candidates)
        self._authorize_actor(
            request, actor=actor, subject=subject, target=target, covered=bool(decision.grants)
        )
        allowed = [key for key in decision.allowed if key in held]
        if explicit and len(allowed) != len(decision.requested):
            record_refusal(
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
            )
            context.note(recorded=True)
            raise refuse_request(
                "invalid_scope",
                "The requested capabilities exceed the subject token or the actor's grants.",
                request,
                reason="capabilities beyond the subject token or the actor's grants were requested",
            )
        if not allowed:
            raise refuse_request(
                "invalid_scope",
                "No capability of the subject token is granted to this client on the target.",
                request,
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
        self,
        request,
        *,
        actor: Agent,
        subject: TokenRecord,
        actor_record: TokenRecord | None,
        target: ToolServer,
        decision: ScopeDecision,
        cnf_jkt: str,
    ) -> None:
        now = timezone.now()
        remaining = int((subject.expires_at - now).total_seconds())
        lifetime = min(decision.lifetime_seconds, remaining)
        if lifetime <= 0:
            raise refuse_request(
                "invalid_request",
                "The subject token is not active.",
                request,
                reason="the subject token expires now",
            )
        decision.lifetime_seconds = lifetime
        client_id = actor.application.client_id
        act = {"sub": client_id}
        if subject.act:
            act["act"] = subject.act
        audit_parameters = {
            "subject_jti": subject.jti,
            "subject_audience": subject.audience,
            "subject_client_id": subject.client_id,
            "actor_chain": actor_chain(act),
            "permission": request.gatehouse_permission,
            "dpop_bound": bool(cnf_jkt),
        }
        if actor_record is not None:
            audit_parameters["actor_jti"] = actor_record.jti
        request.user = subject.user
        request.scopes = decision.allowed
        request.resource = [target.audience]
        request.gatehouse = issuance.Issued.starting(
            now=now,
            lifetime=lifetime,
            agent=actor,
            user=subject.user,
            tool_server=target,
            decision=decision,
            grant_type=GRANT_TYPE,
            act=act,
            cnf_jkt=cnf_jkt,
            action=Action.TOKEN_EXCHANGED,
            audit_parameters=audit_parameters,
        )
        # Step-up: the subject token's acr/auth_time travel on (an exchange authenticates nobody) and must
        # still meet the target capabilities, freshness included.
        step_up.enforce(
            request,
            request.gatehouse,
            authentication=step_up.UserAuthentication(acr=subject.acr, auth_time=subject.auth_time),
            check_age=True,
        )
