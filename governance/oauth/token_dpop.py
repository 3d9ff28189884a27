"""DPoP at the token endpoint (RFC 9449 §5, §10): the proof checked against the endpoint's own URL, the key
a code or refresh-token family is bound to, and the agent's own rule.

The ``htu`` a proof must name is the token endpoint URL derived from ``GATEHOUSE_ISSUER``, never from the
Host header a client chose.  Every refusal is one ``dpop.proof_refused`` event naming the reason (never the
proof): :func:`refusal` builds it.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from django.urls import reverse

from audit.actions import Action
from governance.conf import gatehouse_settings
from governance.models import Agent, RefreshTokenBinding, User
from governance.models.agents import TokenEndpointAuthMethod
from governance.oauth.dpop import DPoPError, DPoPProof, verify_proof
from governance.oauth.refusals import Refusal, RefusalEvent
from governance.oauth.state import BrokerRequest

CODE_CLAIM = "dpop_jkt"
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")


def token_endpoint_url() -> str:
    """The token endpoint as clients reach it: the issuer followed by the endpoint path."""
    return gatehouse_settings.ISSUER + reverse("oauth:token")


def nonce_required() -> bool:
    return bool(gatehouse_settings.DPOP_NONCE_REQUIRED)


def verify_token_proof(
    headers: list[str], method: str, *, expected_jkt: str | None = None
) -> DPoPProof | None:
    """The verified proof of a token request, or None without a ``DPoP`` header; a bad one raises
    :class:`DPoPError` (every RFC 9449 §4.3 check, and the key when ``expected_jkt`` is known).

    A request's proof is verified once (its ``jti`` is then spent); callers keep the answer for the request
    and check a later expectation with :func:`check_key`.
    """
    if not headers:
        return None
    return verify_proof(
        headers=headers,
        method=method,
        url=token_endpoint_url(),
        expected_jkt=expected_jkt,
        nonce_required=nonce_required(),
    )


def token_proof(
    state: BrokerRequest, *, headers: list[str], method: str, expected_jkt: str | None = None
) -> DPoPProof | None:
    """This request's proof (:func:`verify_token_proof` the first time, the same answer after), by the key
    ``expected_jkt`` when one is given; raises :class:`DPoPError`.  Two checks in one request never trip the
    replay cache on their own ``jti``."""
    if not state.proof_checked:
        try:
            state.proof = verify_token_proof(headers, method, expected_jkt=expected_jkt)
        except DPoPError as exc:
            state.proof = exc
        state.proof_checked = True
    if isinstance(state.proof, DPoPError):
        raise state.proof
    check_key(state.proof, expected_jkt)
    return state.proof


def bound_jkt(state: BrokerRequest) -> str:
    """The thumbprint of the key this request's proof showed, or "" (no proof, or not verified yet)."""
    return state.proof.jkt if isinstance(state.proof, DPoPProof) else ""


def check_key(proof: DPoPProof | None, expected_jkt: str | None) -> None:
    """A proof must be by the key a code, token or family is bound to (when there is one)."""
    if (
        proof is not None
        and expected_jkt is not None
        and not hmac.compare_digest(proof.jkt.encode(), expected_jkt.encode())
    ):
        raise DPoPError("key_mismatch")


def grant_binding(grant_type: str, *, code_claims: Any = None, refresh_family: Any = None):
    """What the grant itself is bound to: ("authorization_code" | "refresh_token" | "", jkt or None)."""
    if grant_type == "authorization_code":
        claims = code_claims if isinstance(code_claims, dict) else {}
        return "authorization_code", claims.get(CODE_CLAIM) or None
    if grant_type == "refresh_token" and refresh_family is not None:
        jkt = (
            RefreshTokenBinding.objects.filter(token_family=refresh_family)
            .values_list("jkt", flat=True)
            .first()
        )
        return "refresh_token", jkt
    return "", None


def require(proof: DPoPProof | None, *, expected_jkt: str | None, agent: Agent | None) -> None:
    """A request without a proof is refused when its grant is bound to a key or its agent requires DPoP."""
    if proof is None and (expected_jkt or (agent is not None and agent.dpop_bound_tokens_required)):
        raise DPoPError("missing")


def refusal(
    error: DPoPError,
    *,
    grant_type: str,
    agent: Agent | None,
    user: Any = None,
    binding: str = "",
    token_family: Any = None,
) -> Refusal:
    """The refusal of a proof: RFC 9449 §5 JSON (400, ``DPoP-Nonce`` when relevant) and its one event."""
    parameters = {"reason": error.reason, "grant_type": str(grant_type or "")[:64], "endpoint": "token"}
    if binding:
        parameters["binding"] = binding
    if binding == "refresh_token":
        parameters["token_family"] = str(token_family or "")
    event = RefusalEvent(
        action=Action.DPOP_PROOF_REFUSED,
        error=error.error,
        agent=agent,
        user=user if isinstance(user, User) else None,
        parameters=parameters,
    )
    return Refusal(
        error.error,
        error.description,
        reason=f"DPoP proof refused ({error.reason})",
        event=event,
        headers=error.response_headers(),
    )


def binding_reason(*, binding: str, expected_jkt: str | None, agent: Agent | None) -> str:
    """Which binding made a proof necessary, for the audit ("" when the proof was merely bad)."""
    if expected_jkt:
        return binding
    return "agent_requires_dpop" if agent is not None and agent.dpop_bound_tokens_required else ""


# --- dpop_jkt at the authorization endpoint (RFC 9449 §10) and bound refresh tokens (§5) --------------


def authorization_dpop_jkt(value: Any) -> str:
    """The authorization request's ``dpop_jkt`` ("" when absent); a malformed one is ``invalid_request``."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not _JKT.fullmatch(value):
        raise Refusal(
            "invalid_request",
            "dpop_jkt must be the RFC 7638 SHA-256 thumbprint of a key.",
            reason="malformed dpop_jkt",
        )
    return value


def code_claims(dpop_jkt: Any) -> dict | None:
    """What the authorization code stores in DOT's ``Grant.claims`` (unused otherwise: OpenID is off)."""
    jkt = authorization_dpop_jkt(dpop_jkt)
    return {CODE_CLAIM: jkt} if jkt else None


def bind_refresh_family(*, refresh_token: Any, previous: Any, issued: Any) -> None:
    """A new refresh-token family of a public client, issued with a proof, stays bound to that key."""
    if previous is not None or issued is None or not issued.cnf_jkt or refresh_token.token_family is None:
        return
    if issued.agent.token_endpoint_auth_method != TokenEndpointAuthMethod.NONE:
        return  # RFC 9449 §5: confidential clients' refresh tokens are bound by client authentication
    RefreshTokenBinding.objects.create(token_family=refresh_token.token_family, jkt=issued.cnf_jkt)
