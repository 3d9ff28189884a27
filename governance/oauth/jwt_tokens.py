"""RFC 9068 JWT access tokens: header ``typ: at+jwt``, signed with the current database key."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime

from jwcrypto import jws, jwt
from jwcrypto.common import base64url_decode, base64url_encode

from governance.conf import gatehouse_settings
from governance.oauth import signing_keys

SIGNING_ALGS = ["ES256", "EdDSA"]


@dataclass
class AccessTokenClaims:
    issuer: str
    subject: str
    client_id: str
    audience: str
    scope: list[str]
    issued_at: datetime
    expires_at: datetime
    jti: str
    act: dict | None = None
    cnf_jkt: str = ""
    acr: str = ""
    auth_time: datetime | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        claims = {
            "iss": self.issuer,
            "sub": self.subject,
            "client_id": self.client_id,
            "aud": self.audience,
            "scope": " ".join(self.scope),
            "iat": int(self.issued_at.timestamp()),
            "exp": int(self.expires_at.timestamp()),
            "jti": self.jti,
        }
        # Step-up (acr/auth_time), delegation (act) and DPoP (cnf) are filled by later waves when known.
        if self.auth_time is not None:
            claims["auth_time"] = int(self.auth_time.timestamp())
        if self.acr:
            claims["acr"] = self.acr
        if self.act:
            claims["act"] = self.act
        if self.cnf_jkt:
            claims["cnf"] = {"jkt": self.cnf_jkt}
        claims.update(self.extra)
        return claims


def sign(claims: AccessTokenClaims) -> str:
    """Compact JWS by jwcrypto's JWSCore: the same bytes as ``jwt.JWT(...).serialize()``, without the
    per-object header-registry copies of the JWT and JWS classes (their cost is in docs/performance.md)."""
    record, key = signing_keys.signing_key()
    header = json.dumps({"typ": "at+jwt", "alg": record.alg, "kid": record.kid}, separators=(",", ":"))
    payload = json.dumps(claims.as_dict(), separators=(",", ":")).encode()
    signed = jws.JWSCore(record.alg, key, header, payload, algs=SIGNING_ALGS).sign()
    return f"{signed['protected']}.{signed['payload'].decode()}.{signed['signature']}"


def verify(token: str, *, audience: str | None = None) -> dict:
    """Verify a token against the published keys (tools and tests; the broker itself looks tokens up)."""
    check: dict = {"exp": None}
    if audience is not None:
        check["aud"] = audience
    parsed = jwt.JWT(
        jwt=token,
        key=signing_keys.public_jwk_set(),
        algs=SIGNING_ALGS,
        check_claims=check,
        expected_type="JWS",
    )
    return json.loads(parsed.claims)


class TokenRejected(Exception):
    """Not a usable Gatehouse access token: ``reason`` is ``invalid`` or ``expired`` (fixed words)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


MAX_TOKEN_LENGTH = 8192
_HEADER_MEMBERS = frozenset({"typ", "alg", "kid"})


def verify_access_token(token: str, *, at: float | None = None) -> dict:
    """The claims of a token this issuer signed (``typ`` at+jwt, a published key, our ``iss``), unexpired.

    The mirror of :func:`sign`: the header is exactly ``typ``/``alg``/``kid``, the segments are canonical
    base64url, and the signature verifies with the published key named by ``kid``.  Raises
    :class:`TokenRejected` (``expired`` only for a token that is otherwise valid).
    """
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH or not token.isascii():
        raise TokenRejected("invalid")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected("invalid")
    try:
        header_bytes, payload = base64url_decode(parts[0]), base64url_decode(parts[1])
        header = json.loads(header_bytes)
    except (ValueError, TypeError):
        raise TokenRejected("invalid") from None
    if (
        not isinstance(header, dict)
        or set(header) != _HEADER_MEMBERS
        or header["typ"] != "at+jwt"
        or header["alg"] not in SIGNING_ALGS
        or not isinstance(header["kid"], str)
        or base64url_encode(header_bytes) != parts[0]
        or base64url_encode(payload) != parts[1]
    ):
        raise TokenRejected("invalid")
    key = signing_keys.verification_key(header["kid"])
    if key is None:
        raise TokenRejected("invalid")
    try:
        core = jws.JWSCore(header["alg"], key, header_bytes.decode(), payload, algs=SIGNING_ALGS)
        signature = base64url_decode(parts[2])
        if base64url_encode(signature) != parts[2]:
            raise ValueError("not canonical base64url")
        core.verify(signature)
        claims = json.loads(payload)
    except Exception:  # jwcrypto's InvalidJWSSignature, a key of the wrong type, bad JSON
        raise TokenRejected("invalid") from None
    if not isinstance(claims, dict) or claims.get("iss") != gatehouse_settings.ISSUER:
        raise TokenRejected("invalid")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int):
        raise TokenRejected("invalid")
    if exp <= (time.time() if at is None else at):
        raise TokenRejected("expired")
    return claims
