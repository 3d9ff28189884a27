"""DPoP at the token endpoint: read the proof from a request, check it against the endpoint's own URL.

:func:`token_endpoint_proof` is what grants call (authorization code, client credentials, refresh, token
exchange).  It accepts either the Django request or the oauthlib request DOT builds from it, and verifies a
request's proof at most once: the second call returns the same answer, so two checks in one request never
trip the replay cache on their own ``jti``.

The ``htu`` a proof must name is the token endpoint URL derived from ``GATEHOUSE_ISSUER``, never from the
Host header a client chose.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from django.conf import settings
from django.urls import reverse
from oauthlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from oauthlib.oauth2.rfc6749.tokens import BearerToken

from audit.actions import Action
from governance.models import Agent, RefreshTokenBinding, User
from governance.models.agents import TokenEndpointAuthMethod
from governance.oauth import context
from governance.oauth.dpop import DPoPError, DPoPProof, verify_proof
from governance.oauth.events import record_refusal

_MEMO = "_gatehouse_dpop_proof"
_ABSENT = object()


def token_endpoint_url() -> str:
    """The token endpoint as clients reach it: the issuer followed by the endpoint path."""
    return settings.GATEHOUSE_ISSUER + reverse("oauth:token")


def dpop_header_values(request: Any) -> list[str]:
    """Every value of the request's ``DPoP`` header (a server folds repeats into one ``a, b`` line)."""
    meta = getattr(request, "META", None)
    if meta is None:  # an oauthlib Request: DOT copies Django's META into its headers
        meta = getattr(request, "headers", None) or {}
    value = meta.get("HTTP_DPOP")
    return [] if value is None else [value]


def _method(request: Any) -> str:
    return getattr(request, "http_method", None) or request.method


def nonce_required() -> bool:
    return bool(getattr(settings, "GATEHOUSE_DPOP_NONCE_REQUIRED", False))


def token_endpoint_proof(request: Any, *, expected_jkt: str | None = None) -> DPoPProof | None:
    """The verified proof of a token request, or None when it carries no ``DPoP`` header.

    Raises :class:`DPoPError` for a proof that fails any RFC 9449 §4.3 check, or whose key is not
    ``expected_jkt`` when one is given (a bound code, refresh token or subject token).  Whether a missing
    proof is acceptable is the caller's decision: check for None.
    """
    memo = getattr(request, _MEMO, _ABSENT)
    if memo is _ABSENT:
        headers = dpop_header_values(request)
        if not headers:
            memo = None
        else:
            try:
                memo = verify_proof(
                    headers=headers,
                    method=_method(request),
                    url=token_endpoint_url(),
                    expected_jkt=expected_jkt,
                    nonce_required=nonce_required(),
                )
            except DPoPError as exc:
                memo = exc
        setattr(request, _MEMO, memo)
    if isinstance(memo, DPoPError):
        raise memo
    if (
        memo is not None
        and expected_jkt is not None
        and not hmac.compare_digest(memo.jkt.encode(), expected_jkt.encode())
    ):
        raise DPoPError("key_mismatch")
    return memo


class DPoPProofRefused(OAuth2Error):
    """A :class:`DPoPError` as an oauthlib error: RFC 9449 §5 JSON, 400, ``DPoP-Nonce`` when relevant."""

    status_code = 400

    def __init__(self, error: DPoPError, request: Any = None):
        self.error = error.error
        self.reason = error.reason
        self._extra_headers = error.response_headers()
        super().__init__(description=error.description, request=request)

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._extra_headers)


# --- the token endpoint's rules ----------------------------------------------------------------------


def bound_jkt(request: Any) -> str:
    """The thumbprint of the key this request's proof showed, or "" (no proof, or not verified yet)."""
    memo = getattr(request, _MEMO, None)
    return memo.jkt if isinstance(memo, DPoPProof) else ""


def _agent(request: Any) -> Agent | None:
    from governance.oauth.validator import principal_for

    principal = principal_for(request.client) if getattr(request, "client", None) is not None else None
    return principal if isinstance(principal, Agent) else None


def _binding(request: Any) -> tuple[str, str | None]:
    """What the grant itself is bound to: ("authorization_code" | "refresh_token" | "", jkt or None)."""
    if request.grant_type == "authorization_code":
        claims = request.claims if isinstance(request.claims, dict) else {}
        return "authorization_code", claims.get(CODE_CLAIM) or None
    if request.grant_type == "refresh_token":
        family = getattr(getattr(request, "refresh_token_instance", None), "token_family", None)
        if family is not None:
            jkt = (
                RefreshTokenBinding.objects.filter(token_family=family).values_list("jkt", flat=True).first()
            )
            return "refresh_token", jkt
    return "", None


def check_token_request(request: Any) -> None:
    """post_token hook, before :func:`issuance.check_token`: the proof, the grant's binding, the agent's rule.

    A request without a ``DPoP`` header is refused when the code (``dpop_jkt``) or the refresh token is
    bound to a key, or when the agent requires DPoP; otherwise it gets a Bearer token.  Every refusal is
    one ``dpop.proof_refused`` event naming the reason (never the proof).
    """
    agent = _agent(request)
    binding, expected = _binding(request)
    required = agent is not None and agent.dpop_bound_tokens_required
    try:
        proof = token_endpoint_proof(request, expected_jkt=expected)
        if proof is None and (expected or required):
            raise DPoPError("missing")
    except DPoPError as exc:
        reason = binding if expected else ("agent_requires_dpop" if required else "")
        refuse(exc, request, agent=agent, binding=reason)
        raise DPoPProofRefused(exc, request=request) from None


def refuse(error: DPoPError, request: Any, *, agent: Agent | None, binding: str = "") -> None:
    """Audit a refused proof (``dpop.proof_refused``) and tell the endpoint's own refusal audit it is done."""
    grant_type = str(request.grant_type or "")[:64]
    parameters = {"reason": error.reason, "grant_type": grant_type, "endpoint": "token"}
    if binding:
        parameters["binding"] = binding
    if binding == "refresh_token":
        family = getattr(getattr(request, "refresh_token_instance", None), "token_family", None)
        parameters["token_family"] = str(family or "")
    user = getattr(request, "user", None)
    record_refusal(
        action=Action.DPOP_PROOF_REFUSED,
        error=error.error,
        agent=agent,
        user=user if isinstance(user, User) else None,
        parameters=parameters,
    )
    context.note(recorded=True, reason=f"DPoP proof refused ({error.reason})")


class SenderConstrainedToken(BearerToken):
    """oauthlib's token type, answering ``token_type: DPoP`` when the issued token carries ``cnf.jkt``."""

    def create_token(self, request, refresh_token=False, **kwargs):
        token = super().create_token(request, refresh_token=refresh_token, **kwargs)
        issued = getattr(request, "gatehouse", None)
        if issued is not None and issued.cnf_jkt:
            token["token_type"] = "DPoP"
        return token


# --- dpop_jkt at the authorization endpoint (RFC 9449 §10) and bound refresh tokens (§5) --------------

CODE_CLAIM = "dpop_jkt"
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")


def authorization_dpop_jkt(request: Any) -> str:
    """The authorization request's ``dpop_jkt`` ("" when absent); a malformed one is ``invalid_request``."""
    value = getattr(request, "dpop_jkt", None)
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not _JKT.fullmatch(value):
        context.note(reason="malformed dpop_jkt")
        raise InvalidRequestError(
            description="dpop_jkt must be the RFC 7638 SHA-256 thumbprint of a key.", request=request
        )
    return value


def code_claims(request: Any) -> dict | None:
    """What the authorization code stores in DOT's ``Grant.claims`` (unused otherwise: OpenID is off)."""
    jkt = authorization_dpop_jkt(request)
    return {CODE_CLAIM: jkt} if jkt else None


def bind_refresh_family(*, refresh_token: Any, previous: Any, request: Any) -> None:
    """A new refresh-token family of a public client, issued with a proof, stays bound to that key."""
    issued = getattr(request, "gatehouse", None)
    if previous is not None or issued is None or not issued.cnf_jkt or refresh_token.token_family is None:
        return
    if issued.agent.token_endpoint_auth_method != TokenEndpointAuthMethod.NONE:
        return  # RFC 9449 §5: confidential clients' refresh tokens are bound by client authentication
    RefreshTokenBinding.objects.create(token_family=refresh_token.token_family, jkt=issued.cnf_jkt)
