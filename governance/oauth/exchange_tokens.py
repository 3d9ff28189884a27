"""The incoming side of a token exchange: parameters, the subject and actor tokens, the DPoP proof.

Each function raises a :class:`Refusal` (fixed text; the reason goes to the audit only) or returns what it
validated.  Tokens are validated by the same code as introspection (:mod:`governance.oauth.tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass

from governance.conf import TOKEN_EXCHANGE
from governance.models import Agent, TokenRecord
from governance.oauth import jwt_tokens, token_dpop, tokens
from governance.oauth.dpop import DPoPError, DPoPProof
from governance.oauth.refusals import Refusal
from governance.oauth.state import BrokerRequest

GRANT_TYPE = TOKEN_EXCHANGE
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
# Gatehouse access tokens are JWTs, so either identifier describes them.
ACCEPTED_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)
# A delegation chain longer than this is refused: every link is an agent acting for an agent.
MAX_ACTOR_CHAIN = 5


@dataclass
class ActiveToken:
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


def refuse_request(error: str, description: str, *, reason: str) -> Refusal:
    """An RFC 6749 error with fixed text; the reason goes to the audit event only."""
    return Refusal(error, description, reason=reason)


def body_values(body: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in body if key == name]


def parameters(body: list[tuple[str, str]]) -> dict[str, str]:
    """The exchange's parameters, from the body only, in the shapes RFC 8693 §2.1 allows."""
    params = dict(body)
    if not params.get("subject_token"):
        raise refuse_request("invalid_request", "subject_token is required.", reason="no subject_token")
    if params.get("subject_token_type") not in ACCEPTED_TOKEN_TYPES:
        raise refuse_request(
            "invalid_request",
            "subject_token_type must name an access token issued here.",
            reason="unsupported subject_token_type",
        )
    has_actor_token = bool(params.get("actor_token"))
    if has_actor_token != bool(params.get("actor_token_type")):
        raise refuse_request(
            "invalid_request",
            "actor_token and actor_token_type go together.",
            reason="actor_token without actor_token_type, or the reverse",
        )
    if has_actor_token and params["actor_token_type"] not in ACCEPTED_TOKEN_TYPES:
        raise refuse_request(
            "invalid_request",
            "actor_token_type must name an access token issued here.",
            reason="unsupported actor_token_type",
        )
    requested_type = params.get("requested_token_type")
    if requested_type is not None and requested_type != ACCESS_TOKEN_TYPE:
        raise refuse_request(
            "invalid_request",
            "Only access tokens are issued by token exchange.",
            reason="unsupported requested_token_type",
        )
    return params


def active_token(value: str) -> ActiveToken | None:
    """An active Gatehouse access token (introspection's rules) and its verified claims."""
    record = tokens.find_record(value)
    if record is None or not tokens.still_valid(record):
        return None
    try:  # the same verification as the decision API's
        claims = jwt_tokens.verify_access_token(value)
    except jwt_tokens.TokenRejected:
        return None
    if (
        claims.get("jti") != record.jti
        or claims.get("client_id") != record.client_id
        or claims.get("aud") != record.audience
    ):
        return None
    return ActiveToken(record=record, claims=claims)


def subject_token(value: str, state: BrokerRequest, *, actor: Agent) -> ActiveToken:
    """The subject token: active, naming a user of the actor's organization, with a short enough chain."""
    subject = active_token(value)
    if subject is None:
        raise refuse_request(
            "invalid_request",
            "The subject token is not active.",
            reason="subject token unknown, expired, revoked, tampered or no longer covered",
        )
    record = subject.record
    state.user = record.user
    if record.user is None:
        # A background agent's token names no user; narrowing it is a client-credentials request.
        raise refuse_request(
            "invalid_request",
            "The subject token does not act for a user.",
            reason="the subject token has no user",
        )
    if record.user.organization_id != actor.organization_id:
        raise refuse_request(
            "invalid_request",
            "The subject token is not acceptable for this client.",
            reason="the subject token's user is in another organization",
        )
    if len(actor_chain(record.act)) >= MAX_ACTOR_CHAIN:
        raise refuse_request(
            "invalid_request",
            "The delegation chain is too long.",
            reason="actor chain too long",
        )
    return subject


def actor_token(value: str, *, actor: Agent) -> TokenRecord:
    """The optional actor token must be active and name the authenticated client."""
    validated = active_token(value)
    client_id = actor.application.client_id
    if validated is None or client_id not in (validated.record.client_id, validated.record.subject):
        raise refuse_request(
            "invalid_request",
            "The actor token is not acceptable.",
            reason="actor token inactive or naming another client",
        )
    return validated.record


def dpop_proof(
    state: BrokerRequest,
    *,
    headers: list[str],
    method: str,
    actor: Agent,
    subject: TokenRecord,
    actor_record: TokenRecord | None,
) -> DPoPProof | None:
    """A bound subject or actor token needs a proof by its key, as does an agent that requires DPoP."""
    bound = {r.cnf_jkt for r in (subject, actor_record) if r is not None and r.cnf_jkt}
    if len(bound) > 1:
        raise refuse_request(
            "invalid_request",
            "The subject and actor tokens are bound to different keys.",
            reason="subject and actor tokens bound to different keys",
        )
    expected = next(iter(bound), None)
    try:
        proof = token_dpop.token_proof(state, headers=headers, method=method, expected_jkt=expected)
        if proof is None and (expected is not None or actor.dpop_bound_tokens_required):
            raise DPoPError("missing")
    except DPoPError as exc:
        if subject.cnf_jkt:
            binding = "subject_token"
        elif expected is not None:
            binding = "actor_token"
        else:
            binding = "agent_requires_dpop" if actor.dpop_bound_tokens_required else ""
        raise token_dpop.refusal(
            exc, grant_type=GRANT_TYPE, agent=actor, user=subject.user, binding=binding
        ) from None
    return proof
