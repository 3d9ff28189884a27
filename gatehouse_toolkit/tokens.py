"""Offline verification of Gatehouse access tokens (RFC 9068 JWTs) at a tool server.

What is checked, in order: a compact JWS of bounded size; header ``typ`` is ``at+jwt``; ``alg`` is one of the
configured asymmetric algorithms (so ``none`` and ``HS256`` keyed with the public key are refused before any
key is touched); no ``crit``; the ``kid`` names a key of the issuer's JWKS; the signature verifies with that
key; ``iss`` is the configured issuer; ``aud`` holds this tool server's resource; ``exp`` has not passed and
``iat``/``nbf`` are not in the future (both with a small leeway); ``sub``, ``client_id``, ``jti`` and
``scope`` are present.

What it cannot see: whether the token was revoked, the agent suspended, the grant withdrawn or the user
deactivated since it was issued.  Those hold from the next call only through Gatehouse's decision API
(:mod:`gatehouse_toolkit.decisions`); offline, they are bounded by the token's lifetime.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jwcrypto import jws
from jwcrypto.common import base64url_decode

from gatehouse_toolkit import _jose
from gatehouse_toolkit.jwks import JWKSCache
from gatehouse_toolkit.settings import ToolServerSettings

ACCEPTED_TYP = frozenset({"at+jwt", "application/at+jwt"})
MAX_CLAIM = 1024

# reason -> (contract code, fixed sentence).  Nothing the caller sent is ever repeated.
_FAILURES: dict[str, tuple[str, str]] = {
    "malformed": ("invalid_token", "The access token is not a well-formed signed JWT."),
    "typ": ("invalid_token", "The access token is not a JWT access token (typ at+jwt)."),
    "alg": ("invalid_token", "The access token is not signed with an accepted algorithm."),
    "unknown_key": ("invalid_token", "The access token is signed with a key the issuer does not publish."),
    "signature": ("invalid_token", "The access token's signature does not verify."),
    "issuer": ("invalid_token", "The access token was not issued by the expected authorization server."),
    "audience": ("wrong_audience", "The access token was not issued for this tool server."),
    "expired": ("token_expired", "The access token has expired."),
    "not_yet_valid": ("invalid_token", "The access token is not valid yet."),
    "claims": ("invalid_token", "The access token lacks a required claim or a claim is malformed."),
}


class TokenRejected(Exception):
    """A token refused offline: a fine ``reason``, the decision-API ``code`` it matches, a sentence."""

    def __init__(self, reason: str):
        code, description = _FAILURES[reason]
        super().__init__(description)
        self.reason, self.code, self.description = reason, code, description


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed every offline check, and what it says."""

    token: str
    claims: dict[str, Any]
    subject: str
    client_id: str
    scopes: tuple[str, ...]
    jti: str
    expires_at: int
    jkt: str | None  # cnf.jkt: the DPoP key the token is bound to, if any

    @property
    def dpop_bound(self) -> bool:
        return self.jkt is not None


def _string_claim(claims: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or len(value) > MAX_CLAIM or (not value and not allow_empty):
        raise TokenRejected("claims")
    return value


class AccessTokenVerifier:
    """Checks access tokens against the issuer's keys without calling Gatehouse."""

    def __init__(
        self,
        settings: ToolServerSettings,
        *,
        keys: JWKSCache | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.keys = keys or JWKSCache(settings)
        self._clock = clock
        self._algs = frozenset(settings.token_algs)

    def verify(self, token: str) -> VerifiedToken:
        """The token's verified contents, or :class:`TokenRejected`."""
        try:
            header_segment, payload_segment, signature_segment = _jose.split(token)
            header, raw_header = _jose.json_segment(header_segment)
        except _jose.Malformed:
            raise TokenRejected("malformed") from None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYP:
            raise TokenRejected("typ")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algs:
            raise TokenRejected("alg")
        if "crit" in header or header.get("b64", True) is not True:
            raise TokenRejected("malformed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_CLAIM:
            raise TokenRejected("unknown_key")
        key = self.keys.key(kid)
        if key is None:
            raise TokenRejected("unknown_key")
        if key.get("alg") not in (None, alg):
            raise TokenRejected("alg")
        try:
            claims, payload_bytes = _jose.json_segment(payload_segment)
            signature = base64url_decode(signature_segment)
            core = jws.JWSCore(alg, key, raw_header.decode(), payload_bytes, algs=list(self._algs))
            # JWSCore re-encodes what it was given; a non-canonical encoding therefore fails here too.
            if core.protected != header_segment:
                raise TokenRejected("malformed")
            core.verify(signature)
        except TokenRejected:
            raise
        except _jose.Malformed:
            raise TokenRejected("malformed") from None
        except Exception:  # InvalidJWSSignature, key type/curve mismatches
            raise TokenRejected("signature") from None
        return self._check_claims(token, claims)

    def _check_claims(self, token: str, claims: dict[str, Any]) -> VerifiedToken:
        settings, now = self.settings, self._clock()
        iss = claims.get("iss")
        if not isinstance(iss, str) or not hmac.compare_digest(iss.encode(), settings.issuer.encode()):
            raise TokenRejected("issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if settings.resource not in [a for a in audiences if isinstance(a, str)]:
            raise TokenRejected("audience")
        exp, iat = _jose.numeric_date(claims.get("exp")), _jose.numeric_date(claims.get("iat"))
        if exp is None or iat is None:
            raise TokenRejected("claims")
        if now >= exp + settings.leeway:
            raise TokenRejected("expired")
        if iat > now + settings.leeway:
            raise TokenRejected("not_yet_valid")
        if "nbf" in claims:
            nbf = _jose.numeric_date(claims["nbf"])
            if nbf is None:
                raise TokenRejected("claims")
            if nbf > now + settings.leeway:
                raise TokenRejected("not_yet_valid")
        subject = _string_claim(claims, "sub")
        client_id = _string_claim(claims, "client_id")
        jti = _string_claim(claims, "jti")
        scope = _string_claim(claims, "scope", allow_empty=True)
        jkt = None
        if "cnf" in claims:
            cnf = claims["cnf"]
            jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
            if not isinstance(jkt, str) or not 0 < len(jkt) <= 128:
                raise TokenRejected("claims")
        return VerifiedToken(
            token=token,
            claims=claims,
            subject=subject,
            client_id=client_id,
            scopes=tuple(scope.split()),
            jti=jti,
            expires_at=exp,
            jkt=jkt,
        )
