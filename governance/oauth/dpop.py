"""DPoP proof verification (RFC 9449 §4.3), stateless server nonces and the replay cache.

A proof is a compact JWS whose protected header carries the client's public key (``jwk``).  Every check of
§4.3 runs here; the callers (token endpoint, resource checks) pass the request's method and URI, and, at a
resource, the access token and the ``cnf.jkt`` it is bound to.  Signatures and thumbprints come from
jwcrypto; nonces are Django's salted HMAC.  Failures raise :class:`DPoPError` with a fixed sentence: nothing
the client sent is ever reflected, logged or audited verbatim.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.core.cache import caches
from django.utils.crypto import salted_hmac
from jwcrypto import jwk, jws
from jwcrypto.common import JWSEHeaderRegistry, base64url_decode, base64url_encode

from governance.conf import gatehouse_settings

logger = logging.getLogger(__name__)

#: Asymmetric algorithms accepted for proofs; advertised as ``dpop_signing_alg_values_supported``.
DPOP_SIGNING_ALGS: tuple[str, ...] = ("ES256", "ES384", "EdDSA", "RS256", "PS256")
_KTY_FOR_ALG = {"ES256": "EC", "ES384": "EC", "EdDSA": "OKP", "RS256": "RSA", "PS256": "RSA"}
_CRV_FOR_ALG = {"ES256": {"P-256"}, "ES384": {"P-384"}, "EdDSA": {"Ed25519", "Ed448"}}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048

MAX_HEADER_BYTES = 8192
MAX_JTI = 256
MAX_HTM = 16
MAX_HTU = 2048
MAX_NONCE = 256
MAX_ATH = 128
MAX_NUMERIC_DATE = 2**53  # also refuses NaN, which compares false with everything
# The signature may be empty here so that an unsigned (alg none) proof is refused for its alg.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_NONCE_SALT = "gatehouse.oauth.dpop.nonce"

INVALID_PROOF = "invalid_dpop_proof"
USE_NONCE = "use_dpop_nonce"

# reason -> (error code, fixed description).  The reason is a stable machine word for audit events.
_FAILURES: dict[str, tuple[str, str]] = {
    "missing": (INVALID_PROOF, "A DPoP proof is required."),
    "multiple": (INVALID_PROOF, "Exactly one DPoP header is allowed."),
    "too_large": (INVALID_PROOF, "The DPoP proof is too large."),
    "malformed": (INVALID_PROOF, "The DPoP proof is not a well-formed signed JWT."),
    "typ": (INVALID_PROOF, "The DPoP proof must have typ dpop+jwt."),
    "alg": (INVALID_PROOF, "The DPoP proof must be signed with an accepted asymmetric algorithm."),
    "jwk": (INVALID_PROOF, "The DPoP proof must carry an acceptable public key in its jwk header."),
    "private_key": (INVALID_PROOF, "The DPoP proof jwk must not contain private key material."),
    "signature": (INVALID_PROOF, "The DPoP proof signature does not verify with its jwk."),
    "claims": (INVALID_PROOF, "The DPoP proof lacks a required claim or a claim is malformed."),
    "htm": (INVALID_PROOF, "The DPoP proof does not match the request method."),
    "htu": (INVALID_PROOF, "The DPoP proof does not match the request URI."),
    "iat": (INVALID_PROOF, "The DPoP proof was not created within the accepted time window."),
    "ath": (INVALID_PROOF, "The DPoP proof does not match the access token."),
    "key_mismatch": (INVALID_PROOF, "The DPoP proof key is not the key the token is bound to."),
    "replay": (INVALID_PROOF, "The DPoP proof has already been used."),
    "replay_cache_unavailable": (
        INVALID_PROOF,
        "The DPoP proof could not be checked against replay and is refused; retry later.",
    ),
    "nonce": (USE_NONCE, "The DPoP proof must carry the nonce given in the DPoP-Nonce header."),
}


class DPoPError(Exception):
    """A refused proof: an RFC 9449 error code, a fixed description, and for ``use_dpop_nonce`` a nonce."""

    def __init__(self, reason: str):
        error, description = _FAILURES[reason]
        super().__init__(description)
        self.reason = reason
        self.error = error
        self.description = description
        self.nonce = issue_nonce() if error == USE_NONCE else None

    def response_headers(self) -> dict[str, str]:
        """Headers the endpoint adds to its error answer (``DPoP-Nonce`` for ``use_dpop_nonce``)."""
        return {"DPoP-Nonce": self.nonce} if self.nonce else {}


@dataclass(frozen=True)
class DPoPProof:
    jkt: str
    jti: str
    iat: int
    public_jwk: dict[str, Any]


def thumbprint(jwk_dict: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK, base64url without padding."""
    return jwk.JWK(**jwk_dict).thumbprint()


def access_token_hash(access_token: str) -> str:
    """The ``ath`` value for an access token: base64url(SHA-256(ASCII token))."""
    return base64url_encode(hashlib.sha256(access_token.encode()).digest())


# --- nonces -------------------------------------------------------------------------------------------


def _nonce_for_window(window: int) -> str:
    mac = salted_hmac(_NONCE_SALT, f"dpop-nonce:{window}", algorithm="sha256")
    return base64url_encode(mac.digest())


def _nonce_window(at: float) -> int:
    return int(at // gatehouse_settings.DPOP_NONCE_LIFETIME_SECONDS)


def issue_nonce(*, at: float | None = None) -> str:
    """A server nonce for the ``DPoP-Nonce`` header: an HMAC over the current time window, no state."""
    return _nonce_for_window(_nonce_window(time.time() if at is None else at))


def nonce_is_valid(nonce: str, *, at: float | None = None) -> bool:
    """True for a nonce issued in the current or the previous window."""
    if not isinstance(nonce, str) or not 0 < len(nonce) <= MAX_NONCE:
        return False
    window = _nonce_window(time.time() if at is None else at)
    candidate = nonce.encode("ascii", "replace")
    # Compare against both windows every time so that timing says nothing about which one matched.
    current = hmac.compare_digest(candidate, _nonce_for_window(window).encode("ascii"))
    previous = hmac.compare_digest(candidate, _nonce_for_window(window - 1).encode("ascii"))
    return current or previous


# --- htu ----------------------------------------------------------------------------------------------

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _normalize_percent(path: str) -> str:
    def fix(match: re.Match) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _PERCENT.sub(fix, path)


def _remove_dot_segments(path: str) -> str:
    segments: list[str] = []
    parts = path.split("/")
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == ".":
            if last:
                segments.append("")
        elif part == "..":
            if len(segments) > 1:
                segments.pop()
            if last:
                segments.append("")
        else:
            segments.append(part)
    result = "/".join(segments)
    return result if result.startswith("/") else "/" + result


def normalize_htu(uri: str) -> str | None:
    """The URI without query and fragment, normalized per RFC 3986 §6.2.2–6.2.3; None when unusable."""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_HTU or not uri.isascii():
        return None
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in uri):
        return None
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname  # lower-cased, without brackets
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if ":" in host:
        host = f"[{host}]"
    authority = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _remove_dot_segments(_normalize_percent(parts.path or "/"))
    return f"{scheme}://{authority}{path}"


# --- parsing ------------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> None:
    raise ValueError("NaN and Infinity are not JSON")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate member")
        result[key] = value
    return result


def _json_object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(
            base64url_decode(segment), object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except (ValueError, UnicodeDecodeError):
        raise DPoPError("malformed") from None
    if not isinstance(value, dict):
        raise DPoPError("malformed")
    return value


def _single_proof(headers: list[str]) -> str:
    if not headers:
        raise DPoPError("missing")
    if len(headers) != 1:
        raise DPoPError("multiple")
    proof = headers[0]
    if not isinstance(proof, str) or not proof.strip():
        raise DPoPError("missing")
    if len(proof) > MAX_HEADER_BYTES:
        raise DPoPError("too_large")
    proof = proof.strip()
    # Repeated headers folded into one line by a proxy or the server: "jwt1, jwt2".
    if "," in proof and all(_COMPACT_JWS.fullmatch(part.strip()) for part in proof.split(",")):
        raise DPoPError("multiple")
    if not _COMPACT_JWS.fullmatch(proof):
        raise DPoPError("malformed")
    return proof


def _public_key(header: dict[str, Any], alg: str) -> jwk.JWK:
    member = header.get("jwk")
    if not isinstance(member, dict):
        raise DPoPError("jwk")
    if _PRIVATE_MEMBERS.intersection(member):
        raise DPoPError("private_key")
    if member.get("kty") != _KTY_FOR_ALG[alg]:
        raise DPoPError("jwk")
    if alg in _CRV_FOR_ALG and member.get("crv") not in _CRV_FOR_ALG[alg]:
        raise DPoPError("jwk")
    try:
        key = jwk.JWK(**member)
    except Exception:  # jwcrypto raises several types for malformed keys
        raise DPoPError("jwk") from None
    if key.has_private:
        raise DPoPError("private_key")
    if member["kty"] == "RSA" and key.get_op_key("verify").key_size < MIN_RSA_BITS:
        raise DPoPError("jwk")
    return key


def _claims(payload: dict[str, Any]) -> tuple[str, str, str, int]:
    """The required claims (jti, htm, htu, iat), type- and size-checked; optional nonce and ath too."""
    jti, htm, htu, iat = (payload.get(name) for name in ("jti", "htm", "htu", "iat"))
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        raise DPoPError("claims")
    if not isinstance(htm, str) or not 0 < len(htm) <= MAX_HTM:
        raise DPoPError("claims")
    if not isinstance(htu, str) or not 0 < len(htu) <= MAX_HTU:
        raise DPoPError("claims")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not 0 < iat < MAX_NUMERIC_DATE:
        raise DPoPError("claims")
    for name, limit in (("nonce", MAX_NONCE), ("ath", MAX_ATH)):
        if name in payload and (not isinstance(payload[name], str) or not 0 < len(payload[name]) <= limit):
            raise DPoPError("claims")
    return jti, htm, htu, int(iat)


# --- replay -------------------------------------------------------------------------------------------


def _replay_timeout() -> int:
    # A proof stays acceptable from iat - future skew to iat + past window; keep its jti for all of it.
    return gatehouse_settings.DPOP_IAT_WINDOW_SECONDS + gatehouse_settings.DPOP_IAT_FUTURE_SECONDS + 1


def _remember_jti(jkt: str, jti: str) -> None:
    """Record (jkt, jti) once; refuse a repeat, and refuse when the cache cannot answer (fail closed)."""
    key = "dpop:jti:" + hashlib.sha256(f"{jkt}\x00{jti}".encode()).hexdigest()
    try:
        added = caches[gatehouse_settings.DPOP_REPLAY_CACHE].add(key, 1, _replay_timeout())
    except Exception as exc:  # the cache backend's own errors (redis.ConnectionError, timeouts, ...)
        logger.warning("DPoP replay cache unavailable (%s); proof refused", type(exc).__name__)
        raise DPoPError("replay_cache_unavailable") from None
    if not added:
        raise DPoPError("replay")


# --- verification -------------------------------------------------------------------------------------


class _ProofJWS(jws.JWS):
    """jwcrypto's JWS sharing one header registry between objects: ``jws.JWS()`` deep-copies the registry
    into every object so that a caller may add headers, and verification only reads it."""

    _registry = JWSEHeaderRegistry(jws.JWSHeaderRegistry)

    def __init__(self):  # jws.JWS.__init__ less the copy
        self.objects = {"payload": None}
        self.verifylog = None
        self._allowed_algs = None
        self.header_registry = self._registry


def verify_proof(
    *,
    headers: list[str],
    method: str,
    url: str,
    access_token: str | None = None,
    expected_jkt: str | None = None,
    nonce_required: bool = False,
) -> DPoPProof:
    """Check one request's DPoP proof against RFC 9449 §4.3 and return what it proves.

    ``headers`` holds every value of the request's ``DPoP`` header; ``url`` is the request URI as the server
    sees it (query and fragment are ignored).  Pass ``access_token`` at a resource (``ath`` is then required)
    and ``expected_jkt`` whenever the token, code or refresh token is bound to a key.  The jti is recorded
    only for a proof that passed every other check.
    """
    proof = _single_proof(headers)
    header_segment, payload_segment, _signature = proof.split(".")
    header = _json_object(header_segment)
    if header.get("typ") != "dpop+jwt":
        raise DPoPError("typ")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in DPOP_SIGNING_ALGS:
        raise DPoPError("alg")
    if "crit" in header or "b64" in header:
        raise DPoPError("malformed")
    key = _public_key(header, alg)

    token = _ProofJWS()
    token.allowed_algs = list(DPOP_SIGNING_ALGS)
    try:
        token.deserialize(proof)
        token.verify(key, alg=alg)
    except Exception:  # InvalidJWSSignature, InvalidJWSObject, key/curve mismatches
        raise DPoPError("signature") from None
    payload = _json_object(payload_segment)
    jti, htm, htu, iat = _claims(payload)

    if htm != method:
        raise DPoPError("htm")
    expected_htu = normalize_htu(url)
    claimed_htu = normalize_htu(htu)
    if expected_htu is None or claimed_htu is None or claimed_htu != expected_htu:
        raise DPoPError("htu")
    now = time.time()
    earliest = now - gatehouse_settings.DPOP_IAT_WINDOW_SECONDS
    latest = now + gatehouse_settings.DPOP_IAT_FUTURE_SECONDS
    if not earliest <= iat <= latest:
        raise DPoPError("iat")
    if ("nonce" in payload or nonce_required) and not nonce_is_valid(payload.get("nonce", ""), at=now):
        raise DPoPError("nonce")
    if access_token is not None:
        expected_ath = access_token_hash(access_token).encode()
        if not hmac.compare_digest(payload.get("ath", "").encode(), expected_ath):
            raise DPoPError("ath")
    jkt = key.thumbprint()
    if expected_jkt is not None and not hmac.compare_digest(jkt.encode(), expected_jkt.encode()):
        raise DPoPError("key_mismatch")
    _remember_jti(jkt, jti)
    return DPoPProof(jkt=jkt, jti=jti, iat=iat, public_jwk=key.export_public(as_dict=True))
