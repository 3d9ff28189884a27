"""DPoP proofs checked at a tool server (RFC 9449 §4.3 and §7.1): the resource server's half.

Gatehouse's own checks (``governance/oauth/dpop.py``) run inside the portal with its Django settings, its
cache and its server nonces.  A tool server has none of those: it runs in its own process, often without
Django, and must not import the portal.  So this module states the same RFC rules for a resource, against
jwcrypto alone: exactly one proof; ``typ`` ``dpop+jwt``; an accepted asymmetric ``alg``; a public ``jwk`` of
the matching key type; a signature that verifies with it; ``htm`` = the request method; ``htu`` = the
request URL without query and fragment; ``iat`` within the window; ``ath`` = base64url(SHA-256(token)); the
key's RFC 7638 thumbprint = the token's ``cnf.jkt``; and the ``jti`` not seen before, remembered only once
everything else passed.  Server nonces (``use_dpop_nonce``) are not used at tool servers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from jwcrypto import jwk, jws
from jwcrypto.common import base64url_decode, base64url_encode

from gatehouse_toolkit import _jose
from gatehouse_toolkit.settings import ToolServerSettings

log = logging.getLogger(__name__)

_KTY_FOR_ALG = {"ES256": "EC", "ES384": "EC", "ES512": "EC", "EdDSA": "OKP"}
_CRV_FOR_ALG = {"ES256": {"P-256"}, "ES384": {"P-384"}, "ES512": {"P-521"}, "EdDSA": {"Ed25519", "Ed448"}}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048
MAX_JTI, MAX_HTM, MAX_HTU, MAX_ATH = 256, 16, 2048, 128

# reason -> (contract code, fixed sentence)
_FAILURES: dict[str, tuple[str, str]] = {
    "missing": ("dpop_required", "A DPoP proof is required."),
    "multiple": ("dpop_invalid", "Exactly one DPoP header is allowed."),
    "malformed": ("dpop_invalid", "The DPoP proof is not a well-formed signed JWT."),
    "typ": ("dpop_invalid", "The DPoP proof must have typ dpop+jwt."),
    "alg": ("dpop_invalid", "The DPoP proof must be signed with an accepted asymmetric algorithm."),
    "jwk": ("dpop_invalid", "The DPoP proof must carry an acceptable public key in its jwk header."),
    "private_key": ("dpop_invalid", "The DPoP proof jwk must not contain private key material."),
    "signature": ("dpop_invalid", "The DPoP proof signature does not verify with its jwk."),
    "claims": ("dpop_invalid", "The DPoP proof lacks a required claim or a claim is malformed."),
    "htm": ("dpop_invalid", "The DPoP proof does not match the request method."),
    "htu": ("dpop_invalid", "The DPoP proof does not match the request URI."),
    "iat": ("dpop_invalid", "The DPoP proof was not created within the accepted time window."),
    "ath": ("dpop_invalid", "The DPoP proof does not match the access token."),
    "key_mismatch": ("dpop_invalid", "The DPoP proof key is not the key the token is bound to."),
    "replay": ("dpop_invalid", "The DPoP proof has already been used."),
    "replay_cache_full": ("dpop_invalid", "The DPoP proof could not be checked against replay; retry later."),
    "replay_cache_unavailable": (
        "dpop_invalid",
        "The DPoP proof could not be checked against replay; retry later.",
    ),
}


class ProofRejected(Exception):
    """A refused proof: a fine ``reason``, the decision-API ``code`` (``dpop_required``/``dpop_invalid``)."""

    def __init__(self, reason: str):
        code, description = _FAILURES[reason]
        super().__init__(description)
        self.reason, self.code, self.description = reason, code, description


@dataclass(frozen=True)
class VerifiedProof:
    proof: str
    jkt: str
    jti: str
    iat: int


class ReplayCache(Protocol):
    """Remembers proof ids for a while.  A shared store (Redis ``SET NX EX``) serves several processes."""

    def add(self, key: str, ttl: float) -> bool:
        """Remember ``key`` for ``ttl`` seconds; False when it is already remembered (a replay)."""


class ReplayCacheFull(Exception):
    pass


class MemoryReplayCache:
    """In-process replay cache with a hard bound on entries.

    Expired entries are dropped first; when every slot still holds a live entry it refuses (fail closed)
    rather than forget one early, because a forgotten ``jti`` could be replayed within its window.
    """

    def __init__(self, max_entries: int = 100_000, *, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, float] = OrderedDict()  # key -> expiry, in insertion order
        self._lock = threading.Lock()

    def add(self, key: str, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            expiry = self._entries.get(key)
            if expiry is not None and expiry > now:
                return False
            self._entries.pop(key, None)
            self._evict_expired(now)
            if len(self._entries) >= self.max_entries:
                raise ReplayCacheFull
            self._entries[key] = now + ttl
            return True

    def _evict_expired(self, now: float) -> None:
        # Every entry lives for the same ttl, so insertion order is expiry order.
        while self._entries:
            oldest_key, oldest_expiry = next(iter(self._entries.items()))
            if oldest_expiry > now:
                break
            del self._entries[oldest_key]

    def __len__(self) -> int:
        return len(self._entries)


class RedisReplayCache:
    """Replay cache shared by every process of a tool server: one ``SET key 1 NX EX ttl`` per proof.

    ``client`` is a ``redis.Redis`` (or anything with the same ``set``); the toolkit does not depend on the
    redis package.  An error talking to it refuses the proof (fail closed).
    """

    def __init__(self, client: Any, *, prefix: str = "gatehouse-toolkit:dpop:"):
        self.client = client
        self.prefix = prefix

    def add(self, key: str, ttl: float) -> bool:
        return bool(self.client.set(self.prefix + key, 1, nx=True, ex=max(1, math.ceil(ttl))))


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url(SHA-256(the ASCII access token)), no padding."""
    return base64url_encode(hashlib.sha256(access_token.encode()).digest())


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_htu(uri: object) -> str | None:
    """The URI without query and fragment, with case, default port and percent-encoding normalized
    (RFC 3986 §6.2.2-6.2.3, as RFC 9449 §4.3 asks); None when unusable."""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_HTU or not uri.isascii():
        return None
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in uri):
        return None
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if ":" in host:
        host = f"[{host}]"
    authority = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"

    def fix(match: re.Match) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    path = _PERCENT.sub(fix, parts.path or "/")
    if "/./" in path + "/" or "/../" in path + "/":
        return None  # dot segments: a proof for one path must not pass for another
    return f"{scheme}://{authority}{path}"


def _public_key(header: dict[str, Any], alg: str) -> jwk.JWK:
    member = header.get("jwk")
    if not isinstance(member, dict):
        raise ProofRejected("jwk")
    if _PRIVATE_MEMBERS.intersection(member):
        raise ProofRejected("private_key")
    kty = "RSA" if alg.startswith(("RS", "PS")) else _KTY_FOR_ALG.get(alg)
    if member.get("kty") != kty or (alg in _CRV_FOR_ALG and member.get("crv") not in _CRV_FOR_ALG[alg]):
        raise ProofRejected("jwk")
    try:
        key = jwk.JWK(**member)
    except Exception:  # jwcrypto raises several types for malformed keys
        raise ProofRejected("jwk") from None
    if key.has_private:
        raise ProofRejected("private_key")
    if kty == "RSA" and key.get_op_key("verify").key_size < MIN_RSA_BITS:
        raise ProofRejected("jwk")
    return key


def _claims(payload: dict[str, Any]) -> tuple[str, str, str, int, str]:
    jti, htm, htu, ath = (payload.get(name) for name in ("jti", "htm", "htu", "ath"))
    iat = _jose.numeric_date(payload.get("iat"))
    for value, limit in ((jti, MAX_JTI), (htm, MAX_HTM), (htu, MAX_HTU), (ath, MAX_ATH)):
        if not isinstance(value, str) or not 0 < len(value) <= limit:
            raise ProofRejected("claims")
    if iat is None:
        raise ProofRejected("claims")
    return jti, htm, htu, iat, ath


class DPoPVerifier:
    """Checks the DPoP proof that came with a DPoP-bound access token."""

    def __init__(
        self,
        settings: ToolServerSettings,
        *,
        replay_cache: ReplayCache | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.replay_cache = replay_cache if replay_cache is not None else MemoryReplayCache()
        self._clock = clock
        self._algs = frozenset(settings.dpop_algs)

    def verify(
        self, *, proofs: list[str], method: str, url: str, access_token: str, jkt: str
    ) -> VerifiedProof:
        """Accept the request's proof (every ``DPoP`` header value in ``proofs``) or raise
        :class:`ProofRejected`.  ``url`` is the request URL as clients reach this tool server."""
        if not proofs:
            raise ProofRejected("missing")
        if len(proofs) != 1:
            raise ProofRejected("multiple")
        proof = proofs[0].strip() if isinstance(proofs[0], str) else ""
        if not proof:
            raise ProofRejected("missing")
        if "," in proof:
            raise ProofRejected("multiple")  # repeated headers folded into one line
        try:
            header_segment, payload_segment, signature_segment = _jose.split(proof)
            header, raw_header = _jose.json_segment(header_segment)
        except _jose.Malformed:
            raise ProofRejected("malformed") from None
        if header.get("typ") != "dpop+jwt":
            raise ProofRejected("typ")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algs:
            raise ProofRejected("alg")
        if "crit" in header or header.get("b64", True) is not True:
            raise ProofRejected("malformed")
        key = _public_key(header, alg)
        try:
            payload, payload_bytes = _jose.json_segment(payload_segment)
            core = jws.JWSCore(alg, key, raw_header.decode(), payload_bytes, algs=list(self._algs))
            if core.protected != header_segment:
                raise ProofRejected("malformed")
            core.verify(base64url_decode(signature_segment))
        except ProofRejected:
            raise
        except _jose.Malformed:
            raise ProofRejected("malformed") from None
        except Exception:  # InvalidJWSSignature, curve mismatches
            raise ProofRejected("signature") from None
        jti, htm, htu, iat, ath = _claims(payload)

        if htm != method.upper():
            raise ProofRejected("htm")
        expected_htu, claimed_htu = normalize_htu(url), normalize_htu(htu)
        if expected_htu is None or claimed_htu != expected_htu:
            raise ProofRejected("htu")
        now = self._clock()
        if not now - self.settings.dpop_window <= iat <= now + self.settings.dpop_future_skew:
            raise ProofRejected("iat")
        if not hmac.compare_digest(ath.encode(), access_token_hash(access_token).encode()):
            raise ProofRejected("ath")
        thumbprint = key.thumbprint()
        if not hmac.compare_digest(thumbprint.encode(), jkt.encode()):
            raise ProofRejected("key_mismatch")
        replay_key = hashlib.sha256(f"{thumbprint}\x00{jti}".encode()).hexdigest()
        ttl = self.settings.dpop_window + self.settings.dpop_future_skew + 1
        try:
            fresh = self.replay_cache.add(replay_key, ttl)
        except ReplayCacheFull:
            raise ProofRejected("replay_cache_full") from None
        except Exception as exc:  # the shared store's own errors (connection refused, timeouts): fail closed
            log.warning("DPoP replay cache unavailable (%s); proof refused", type(exc).__name__)
            raise ProofRejected("replay_cache_unavailable") from None
        if not fresh:
            raise ProofRejected("replay")
        return VerifiedProof(proof=proof, jkt=thumbprint, jti=jti, iat=iat)
