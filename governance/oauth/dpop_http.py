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
from typing import Any

from django.conf import settings
from django.urls import reverse
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from governance.oauth.dpop import DPoPError, DPoPProof, verify_proof

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
