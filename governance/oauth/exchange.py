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
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone
from jwcrypto.common import JWException
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.base import GrantTypeBase

from audit.actions import Action
from governance.models import Agent, Grant, TokenRecord, ToolServer
from governance.models.agents import AgentKind
from governance.oauth import context, introspection, issuance, jwt_tokens
from governance.oauth.dpop import DPoPError
from governance.oauth.dpop_http import DPoPProofRefused, refuse, token_endpoint_proof
from governance.oauth.events import record_refusal
from governance.oauth.scoping import (
    BrokerRefusal,
    ScopeDecision,
    evaluate_request,
    parse_scope,
    resolve_audience,
)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
# Gatehouse access tokens are JWTs, so either identifier describes them.
ACCEPTED_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)
SINGLE_VALUED = (
    "grant_type",
    "scope",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
)
# A delegation chain longer than this is refused: every link is an agent acting for an agent.
MAX_ACTOR_CHAIN = 5


@dataclass
class Subject:
    """A validated incoming token: its record and its verified claims."""

    record: TokenRecord
    claims: dict


def actor_chain(act: dict | None) -> list[str]:
    """The client_ids of a nested ``act`` claim, outermost (current actor) first."""
    chain: list[str] = []
    while isinstance(act, dict) and len(chain) <= MAX_ACTOR_CHAIN + 1:
        chain.append(str(act.get("sub", "")))
        act = act.get("act")
    return chain


def _refuse(error: str, description: str, request, *, reason: str) -> errors.OAuth2Error:
    """An RFC 6749 error with fixed text; the reason goes to the audit event only."""
    context.note(reason=reason)
    if error == "invalid_request":
        return errors.InvalidRequestError(description=description, request=request)
    if error == "invalid_scope":
        return errors.InvalidScopeError(description=description, request=request)
    if error == "unauthorized_client":
        return errors.UnauthorizedClientError(description=description, request=request)
    return errors.CustomOAuth2Error(error=error, description=description, request=request)


def _body(request) -> dict[str, str]:
    return {key: value for key, value in (request.decoded_body or [])}


def _body_values(request, name: str) -> list[str]:
    return [value for key, value in (request.decoded_body or []) if key == name]


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

    # ---- the request, in the order a refusal is cheapest ----------------------------------------------
    def validate_token_request(self, request) -> None:
        if request.grant_type != GRANT_TYPE:
            raise errors.UnsupportedGrantTypeError(request=request)
        for name in SINGLE_VALUED:
            if name in request.duplicate_params:
                raise _refuse(
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
            raise _refuse(
                "unauthorized_client",
                "Only an interactive agent acts on behalf of a user.",
                request,
                reason="a background agent may not act for a user",
            )
        params = self._parameters(request)
        subject = self._subject(params["subject_token"], request, actor=actor)
        actor_record = None
        if params.get("actor_token"):
            actor_record = self._actor_token(params["actor_token"], request, actor=actor)
        proof = self._proof(request, actor=actor, subject=subject.record, actor_record=actor_record)
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

    def _parameters(self, request) -> dict[str, str]:
        params = _body(request)
        if not params.get("subject_token"):
            raise _refuse("invalid_request", "subject_token is required.", request, reason="no subject_token")
        if params.get("subject_token_type") not in ACCEPTED_TOKEN_TYPES:
            raise _refuse(
                "invalid_request",
                "subject_token_type must name an access token issued here.",
                request,
                reason="unsupported subject_token_type",
            )
        has_actor_token = bool(params.get("actor_token"))
        if has_actor_token != bool(params.get("actor_token_type")):
            raise _refuse(
                "invalid_request",
                "actor_token and actor_token_type go together.",
                request,
                reason="actor_token without actor_token_type, or the reverse",
            )
        if has_actor_token and params["actor_token_type"] not in ACCEPTED_TOKEN_TYPES:
            raise _refuse(
                "invalid_request",
                "actor_token_type must name an access token issued here.",
                request,
                reason="unsupported actor_token_type",
            )
        requested_type = params.get("requested_token_type")
        if requested_type is not None and requested_type != ACCESS_TOKEN_TYPE:
            raise _refuse(
                "invalid_request",
                "Only access tokens are issued by token exchange.",
                request,
                reason="unsupported requested_token_type",
            )
        return params

    def _validated(self, value: str) -> Subject | None:
        """An active Gatehouse access token (introspection's rules) and its verified claims."""
        record = introspection.find_record(value)
        if record is None or not introspection.still_valid(record):
            return None
        try:
            claims = jwt_tokens.verify(value, audience=record.audience)
        except (JWException, ValueError, TypeError):
            return None
        if claims.get("jti") != record.jti or claims.get("client_id") != record.client_id:
            return None
        return Subject(record=record, claims=claims)

    def _subject(self, value: str, request, *, actor: Agent) -> Subject:
        subject = self._validated(value)
        if subject is None:
            raise _refuse(
                "invalid_request",
                "The subject token is not active.",
                request,
                reason="subject token unknown, expired, revoked, tampered or no longer covered",
            )
        record = subject.record
        context.note(user=record.user)
        request.user = record.user
        if record.user is None:
            # A background agent's token names no user; narrowing it is a client-credentials request.
            raise _refuse(
                "invalid_request",
                "The subject token does not act for a user.",
                request,
                reason="the subject token has no user",
            )
        if record.user.organization_id != actor.organization_id:
            raise _refuse(
                "invalid_request",
                "The subject token is not acceptable for this client.",
                request,
                reason="the subject token's user is in another organization",
            )
        if len(actor_chain(record.act)) >= MAX_ACTOR_CHAIN:
            raise _refuse(
                "invalid_request",
                "The delegation chain is too long.",
                request,
                reason="actor chain too long",
            )
        return subject

    def _actor_token(self, value: str, request, *, actor: Agent) -> TokenRecord:
        """The optional actor token must be active and name the authenticated client."""
        validated = self._validated(value)
        client_id = actor.application.client_id
        if validated is None or client_id not in (validated.record.client_id, validated.record.subject):
            raise _refuse(
                "invalid_request",
                "The actor token is not acceptable.",
                request,
                reason="actor token inactive or naming another client",
            )
        return validated.record

    def _proof(self, request, *, actor: Agent, subject: TokenRecord, actor_record: TokenRecord | None):
        """A bound subject or actor token needs a proof by its key, as does an agent that requires DPoP."""
        bound = {r.cnf_jkt for r in (subject, actor_record) if r is not None and r.cnf_jkt}
        if len(bound) > 1:
            raise _refuse(
                "invalid_request",
                "The subject and actor tokens are bound to different keys.",
                request,
                reason="subject and actor tokens bound to different keys",
            )
        expected = next(iter(bound), None)
        try:
            proof = token_endpoint_proof(request, expected_jkt=expected)
            if proof is None and (expected is not None or actor.dpop_bound_tokens_required):
                raise DPoPError("missing")
        except DPoPError as exc:
            if subject.cnf_jkt:
                binding = "subject_token"
            elif expected is not None:
                binding = "actor_token"
            else:
                binding = "agent_requires_dpop" if actor.dpop_bound_tokens_required else ""
            refuse(exc, request, agent=actor, binding=binding)  # one dpop.proof_refused event
            raise DPoPProofRefused(exc, request=request) from None
        return proof

    def _target(self, request, *, actor: Agent) -> ToolServer:
        """``resource`` and ``audience`` together must name exactly one registered tool server."""
        named = _body_values(request, "resource") + _body_values(request, "audience")
        try:
            target = resolve_audience(named, agent=actor)
        except BrokerRefusal as refusal:
            context.note(reason=refusal.description)
            raise issuance.oauth_error(refusal, request) from None
        context.note(audience=target.audience)
        return target

    def _authorize_actor(
        self, request, *, actor: Agent, subject: Subject, target: ToolServer, covered: bool
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
            raise _refuse(
                "invalid_request",
                "This client may not act for the subject.",
                request,
                reason="no may_act naming the actor and no grant for this user and actor on the audience",
            )
        request.gatehouse_permission = "grant"

    def _decide(
        self, request, *, actor: Agent, subject: Subject, target: ToolServer, params: dict
    ) -> ScopeDecision:
        """Only narrowing: the subject token's scope ∩ the actor's grants for this user on the target."""
        record = subject.record
        try:
            requested = parse_scope(params.get("scope"))
        except BrokerRefusal as refusal:
            raise _refuse("invalid_scope", refusal.description, request, reason=refusal.description) from None
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
            raise _refuse(
                "invalid_scope",
                "The requested capabilities exceed the subject token or the actor's grants.",
                request,
                reason="capabilities beyond the subject token or the actor's grants were requested",
            )
        if not allowed:
            raise _refuse(
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
            raise _refuse(
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
        request.gatehouse = issuance.Issued(
            agent=actor,
            user=subject.user,
            tool_server=target,
            decision=decision,
            jti=uuid.uuid4().hex,
            issued_at=now,
            expires_at=now + timedelta(seconds=lifetime),
            grant_type=GRANT_TYPE,
            act=act,
            cnf_jkt=cnf_jkt,
            action=Action.TOKEN_EXCHANGED,
            audit_parameters=audit_parameters,
        )
