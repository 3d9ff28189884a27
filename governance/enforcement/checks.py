"""The four checks of a tool call, each a function that returns what it proved or raises a :class:`Denial`.

token ▸ scope ▸ user ▸ rate.  Every rule is the broker's own, called here, never restated:
signature and format (:func:`governance.oauth.jwt_tokens.verify_access_token`), the stored record and its
revocation (:func:`governance.oauth.tokens.find_record`), agent state (``Agent.is_active``), DPoP
(:func:`governance.oauth.dpop.verify_proof`), grants (:func:`governance.oauth.scoping.evaluate_for_resource`),
step-up (:mod:`governance.auth_levels`), constraints (:mod:`governance.enforcement.constraints`), limits
(:mod:`governance.enforcement.limits`) and approvals (:mod:`governance.enforcement.approvals`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from governance import auth_levels
from governance.enforcement import approvals, constraints, limits
from governance.enforcement.reasons import Denial
from governance.models import Agent, Capability, TokenRecord, ToolServer, User
from governance.oauth import jwt_tokens
from governance.oauth.dpop import DPoPError, verify_proof
from governance.oauth.refusals import Refusal
from governance.oauth.scoping import evaluate_for_resource, evaluate_request
from governance.oauth.tokens import find_record


class Unavailable(Exception):
    """A store the decision needs (Redis, the database) did not answer: the decision is ``unavailable``."""


@dataclass(frozen=True)
class Call:
    """One tool call to decide on, as the tool server received it (see docs/decision-api.md)."""

    token: str
    capability_key: str
    tool: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    dpop: str | None = None
    http_method: str | None = None
    http_url: str | None = None
    agent_id: str | None = None  # subject.id: the agent's client_id, when the caller names it


@dataclass
class Holder:
    """What the token check proved: the verified claims, the stored record, the agent and user."""

    claims: dict[str, Any]
    record: TokenRecord
    agent: Agent
    user: User | None
    dpop_jkt: str = ""


# --- 1. token ----------------------------------------------------------------------------------------------


def check_token(call: Call, tool_server: ToolServer) -> Holder:
    """Signature, issuer, expiry, audience = the calling tool server, not revoked, agent active, DPoP."""
    try:
        claims = jwt_tokens.verify_access_token(call.token)
    except jwt_tokens.TokenRejected as exc:
        raise Denial("token_expired" if exc.reason == "expired" else "invalid_token") from None
    if claims.get("aud") != tool_server.audience:
        raise Denial("wrong_audience")
    if call.agent_id is not None and call.agent_id != claims.get("client_id"):
        raise Denial("invalid_token", detail={"why": "subject.id is not the token's agent"})
    record = find_record(call.token)
    if record is None or record.jti != claims.get("jti"):
        raise _why_gone(claims, tool_server)
    agent = record.agent
    if not agent.is_active:
        raise Denial("agent_inactive", detail={"agent_status": agent.status})
    holder = Holder(claims=claims, record=record, agent=agent, user=record.user)
    if record.cnf_jkt:
        holder.dpop_jkt = _check_proof(call, record.cnf_jkt)
    return holder


def _why_gone(claims: dict[str, Any], tool_server: ToolServer) -> Denial:
    """A signed, unexpired token without its record was revoked: say whether the kill switch did it (the
    agent is no longer active, or the grant behind it is gone) or a revocation of the token itself."""
    agent = (
        Agent.objects.select_related("application")
        .filter(application__client_id=claims.get("client_id"))
        .first()
    )
    if agent is None:
        return Denial("token_revoked")
    if not agent.is_active:
        return Denial("agent_inactive", detail={"agent_status": agent.status, "token": "revoked"})
    user = None
    if claims.get("sub") != claims.get("client_id"):
        user = User.objects.filter(pk=_int(claims.get("sub"))).first()
        if user is None or not user.is_active:
            return Denial("grant_inactive", detail={"why": "user inactive", "token": "revoked"})
    keys = str(claims.get("scope") or "").split()
    decision = evaluate_request(agent=agent, user=user, audience=tool_server, requested=keys)
    if keys and not decision.ok:
        return Denial("grant_inactive", detail={"why": "grant revoked", "token": "revoked"})
    return Denial("token_revoked")


def _int(value: Any) -> int:
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else 0


def _check_proof(call: Call, jkt: str) -> str:
    if not call.dpop:
        raise Denial("dpop_required")
    if not call.http_method or not call.http_url:
        raise Denial("dpop_invalid", detail={"why": "context.http is missing"})
    try:
        proof = verify_proof(
            headers=[call.dpop],
            method=call.http_method,
            url=call.http_url,
            access_token=call.token,
            expected_jkt=jkt,
        )
    except DPoPError as exc:
        if exc.reason == "replay_cache_unavailable":
            raise Unavailable("DPoP replay cache") from None
        raise Denial("dpop_invalid", detail={"why": exc.reason}) from None
    return proof.jkt


# --- 2. scope ----------------------------------------------------------------------------------------------


def check_scope(call: Call, holder: Holder) -> None:
    """The token carries the capability the call needs."""
    if call.capability_key not in holder.record.capability_keys:
        raise Denial("insufficient_scope", answer={"scope": call.capability_key[:128]})


# --- 3. user -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Permitted:
    """What the user check allows: the capability, and the approved entry the call will use up (if any)."""

    capability: Capability
    approved_entry: int | None = None


def check_user(call: Call, holder: Holder, tool_server: ToolServer) -> Permitted:
    """The grant is active now; the user's authentication is strong enough; the parameters are within the
    capability's constraints for this user; and, when people must approve, this exact call was approved."""
    try:
        _, decision = evaluate_for_resource(
            [tool_server.audience], agent=holder.agent, user=holder.user, requested=[call.capability_key]
        )
    except Refusal:  # the tool server is not in the agent's organization: nothing is granted there
        decision = None
    if decision is None or not decision.ok:
        inactive = holder.user is not None and not holder.user.is_active
        raise Denial("grant_inactive", detail={"why": "user inactive" if inactive else "no active grant"})
    capability = decision.grants[0].capability
    requirement = auth_levels.required_for([capability])
    if requirement.acr != auth_levels.ACR_PASSWORD and not auth_levels.meets(
        acr=holder.record.acr or None,
        auth_time=int(holder.record.auth_time.timestamp()) if holder.record.auth_time else None,
        required_acr=requirement.acr,
        max_age=requirement.max_age,
    ):
        answer: dict[str, Any] = {"acr_values": requirement.acr}
        if requirement.max_age is not None:
            answer["max_age"] = requirement.max_age
        raise Denial("step_up_required", answer=answer, detail={"token_acr": holder.record.acr})
    user = holder.user
    violation = constraints.first_violation(
        capability.constraints,
        call.parameters,
        user_id=str(user.pk) if user is not None else None,
        attributes=getattr(user, "attributes", None),
    )
    if violation is not None:
        raise Denial("constraint_violated", detail={"parameter": violation.parameter, "rule": violation.rule})
    if not approvals.approval_needed(capability, call.parameters):
        return Permitted(capability)
    index = approvals.approved_entry(
        holder.claims, capability_key=call.capability_key, parameters=call.parameters
    )
    if index is None:
        raise Denial("approval_required")
    return Permitted(capability, approved_entry=index)


def use_approval(holder: Holder, permitted: Permitted) -> None:
    """Use up the approved entry the call relies on (last, once every check passed): once only."""
    if permitted.approved_entry is None:
        return
    marked = approvals.mark_request_used(jti=holder.record.jti, agent=holder.agent)
    if marked is not None:
        if not marked:
            raise Denial("approval_required", detail={"why": "approved call already used"})
        return
    try:
        fresh = approvals.consume(
            jti=holder.record.jti,
            index=permitted.approved_entry,
            expires_at=holder.claims["exp"],
            now=time.time(),
        )
    except limits.LimiterUnavailable:
        raise Unavailable("approved-call store") from None
    if not fresh:
        raise Denial("approval_required", detail={"why": "approved call already used"})


# --- 4. rate and quota -------------------------------------------------------------------------------------


def check_rate(holder: Holder, capability: Capability) -> None:
    """Count the call against the capability's per-minute limit and daily quota for this agent and user."""
    try:
        limited = limits.consume(
            agent_id=holder.agent.pk,
            user_id=holder.user.pk if holder.user is not None else None,
            capability=capability,
        )
    except limits.LimiterUnavailable:
        raise Unavailable("rate-limit store") from None
    if limited is not None:
        raise Denial(limited.reason, answer={"retry_after": limited.retry_after})
