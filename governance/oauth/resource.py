"""The tool-server half of DPoP (RFC 9449 §7): a request carries ``Authorization: DPoP <token>`` and a proof.

A tool server introspects the token (RFC 7662), then calls :func:`check_dpop_request` with what it received.
The helper checks the scheme against the token's binding, the proof itself (§4.3, with ``ath``), and that
the proof's key is the token's ``cnf.jkt``.  A refusal is a :class:`ResourceRefusal` carrying the 401
challenge to send back; it never repeats the token or the proof.  The decision API reuses this function.

:func:`check_step_up` is the RFC 9470 half: a capability marked for step-up needs a token whose ``acr`` and
``auth_time`` (from introspection) are strong and recent enough, else a 401
``insufficient_user_authentication``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from governance import auth_levels
from governance.oauth.dpop import DPOP_SIGNING_ALGS, DPoPError, DPoPProof, verify_proof

INVALID_TOKEN = "invalid_token"
MAX_TOKEN = 8192

_TOKEN_FAILURES = {
    "no_token": "The request carries no access token in the DPoP scheme.",
    "inactive": "The access token is not active.",
    "not_bound": "The access token is not bound to a DPoP key; present it as a Bearer token.",
    "bound_as_bearer": "The access token is bound to a key; present it with the DPoP scheme and a proof.",
}


class ResourceRefusal(Exception):
    """A refused resource request: ``error`` for the challenge, a fixed sentence, a stable ``reason``."""

    status_code = 401

    def __init__(self, *, error: str, reason: str, description: str, nonce: str | None = None):
        super().__init__(description)
        self.error, self.reason, self.description, self.nonce = error, reason, description, nonce

    @classmethod
    def from_proof(cls, exc: DPoPError) -> ResourceRefusal:
        return cls(error=exc.error, reason=exc.reason, description=exc.description, nonce=exc.nonce)

    @classmethod
    def token(cls, reason: str) -> ResourceRefusal:
        return cls(error=INVALID_TOKEN, reason=reason, description=_TOKEN_FAILURES[reason])

    def www_authenticate(self) -> str:
        """The RFC 9449 §7.1 challenge: ``DPoP error="...", error_description="...", algs="..."``."""
        algs = " ".join(DPOP_SIGNING_ALGS)
        return f'DPoP error="{self.error}", error_description="{self.description}", algs="{algs}"'

    def response_headers(self) -> dict[str, str]:
        headers = {"WWW-Authenticate": self.www_authenticate()}
        if self.nonce:
            headers["DPoP-Nonce"] = self.nonce
        return headers


@dataclass(frozen=True)
class DPoPRequest:
    """What a checked request proves: the token, its introspected facts and the proof."""

    access_token: str
    claims: dict[str, Any]
    proof: DPoPProof


def _token(authorization_header: str | None) -> tuple[str, str]:
    """(scheme lower-cased, token) from an Authorization header; ("", "") when unusable."""
    if not isinstance(authorization_header, str):
        return "", ""
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if not token or len(token) > MAX_TOKEN or " " in token:
        return "", ""
    return scheme.lower(), token


def _bound_jkt(introspection_result: dict[str, Any]) -> str:
    cnf = introspection_result.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) and jkt else ""


def check_dpop_request(
    *,
    authorization_header: str | None,
    dpop_headers: list[str],
    method: str,
    url: str,
    introspection_result: dict[str, Any],
    nonce_required: bool = False,
) -> DPoPRequest:
    """Accept a DPoP-bound token request at a tool server, or raise :class:`ResourceRefusal`.

    ``dpop_headers`` holds every ``DPoP`` header value received; ``url`` is the request URI as clients
    reach the tool server (its public address, not a Host header taken on trust); ``introspection_result``
    is Gatehouse's RFC 7662 answer for the token.  Checks, in order: the DPoP scheme and a token; an active
    token bound to a key (``cnf.jkt``); the proof per RFC 9449 §4.3 with ``ath`` = hash of this token and
    the proof key's thumbprint = ``cnf.jkt`` (the proof's ``jti`` is then remembered).
    """
    scheme, token = _token(authorization_header)
    active = introspection_result.get("active") is True
    jkt = _bound_jkt(introspection_result) if active else ""
    if scheme == "bearer" and jkt:
        raise ResourceRefusal.token("bound_as_bearer")  # §7.2: a bound token never passes as Bearer
    if scheme != "dpop" or not token:
        raise ResourceRefusal.token("no_token")
    if not active:
        raise ResourceRefusal.token("inactive")
    if not jkt:
        raise ResourceRefusal.token("not_bound")
    try:
        proof = verify_proof(
            headers=dpop_headers,
            method=method,
            url=url,
            access_token=token,
            expected_jkt=jkt,
            nonce_required=nonce_required,
        )
    except DPoPError as exc:
        raise ResourceRefusal.from_proof(exc) from None
    return DPoPRequest(access_token=token, claims=dict(introspection_result), proof=proof)


# --- step-up at the tool server (RFC 9470 §3) ------------------------------------------------------------


@dataclass(frozen=True)
class StepUpChallenge:
    """The 401 a tool server sends when a token's authentication is too weak or too old for a capability."""

    status_code: int
    www_authenticate: str

    def response_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.www_authenticate}


def check_step_up(
    introspection_result: dict[str, Any], capability: Any, *, max_age: int | None = None
) -> StepUpChallenge | None:
    """None when the token may be used for ``capability``; else the RFC 9470 challenge to answer with.

    ``capability`` is a :class:`~governance.models.Capability` (or anything with ``requires_step_up``).  A
    capability marked for step-up needs ``acr`` at the MFA level and ``auth_time`` at most ``max_age``
    seconds ago (default ``GATEHOUSE_STEP_UP_MAX_AGE_SECONDS``).  The challenge's scheme is ``DPoP`` for a
    key-bound token, else ``Bearer``.  Whether the token is active and carries the capability is checked
    before this, by introspection and the scope check.
    """
    if not getattr(capability, "requires_step_up", False):
        return None
    window = auth_levels.step_up_max_age() if max_age is None else max_age
    acr = introspection_result.get("acr")
    when = introspection_result.get("auth_time")
    if auth_levels.meets(
        acr=acr if isinstance(acr, str) else None,
        auth_time=when if isinstance(when, int) and not isinstance(when, bool) else None,
        required_acr=auth_levels.ACR_MFA,
        max_age=window,
    ):
        return None
    scheme = "DPoP" if _bound_jkt(introspection_result) else "Bearer"
    status, header = auth_levels.insufficient_user_authentication(auth_levels.ACR_MFA, window, scheme=scheme)
    return StepUpChallenge(status_code=status, www_authenticate=header)
