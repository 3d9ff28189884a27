"""RFC 7523 client authentication (private_key_jwt), for agents and tool servers.

The assertion is verified with jwcrypto against the client's registered JWKS (or its JWKS URI, fetched with a
short timeout and cached).  ``iss`` = ``sub`` = client_id, ``aud`` names this issuer or the endpoint called,
``exp`` is required and at most an hour (plus skew) ahead, and a ``jti`` is accepted once: the replay cache is
Django's cache (Redis in production), keyed per client, for the assertion's remaining lifetime.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.cache import cache
from jwcrypto import jwk, jws
from jwcrypto.common import JWException, JWSEHeaderRegistry, base64url_decode

from governance.conf import gatehouse_settings

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Asymmetric only: a shared-secret (HS*) or unsigned (none) assertion proves nothing about a key pair.
ALLOWED_ALGS = ["ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
SIGNING_ALG_VALUES = ["ES256", "EdDSA", "RS256", "PS256"]
MAX_ASSERTION_LENGTH = 8192
MAX_JWKS_BYTES = 64 * 1024


class AssertionRejected(Exception):
    """The assertion does not authenticate the client; ``reason`` is fixed text safe to audit."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedAssertion:
    client_id: str
    jti: str
    kid: str


def assertion_audiences(path: str) -> set[str]:
    """``aud`` values a client assertion may carry: the issuer, or the endpoint (``path``) it is sent to."""
    issuer = gatehouse_settings.ISSUER
    return {issuer, issuer + "/", issuer + "/oauth/token/", issuer + path}


def unverified_issuer(assertion: str) -> str | None:
    """The ``iss`` claim before verification: only to find which client's keys to try."""
    if not isinstance(assertion, str) or len(assertion) > MAX_ASSERTION_LENGTH:
        return None
    # Decoded by hand, not through a JWS object: only a lookup key, and verify_assertion checks everything.
    parts = assertion.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64url_decode(parts[1]))
    except (ValueError, TypeError):
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) and 0 < len(iss) <= 255 else None


JWKS_FAILURE_CACHE_SECONDS = 60


def jwks_uri_refusal(uri: str) -> str | None:
    """Why Gatehouse will not fetch ``uri`` (None when it may).  Outside ``DEBUG``: ``https`` only, and the
    host must resolve only to public unicast addresses (no loopback, private, link-local, multicast or
    reserved ones: no blind SSRF into the deployment's network).  ``DEBUG``: ``http`` and loopback too."""
    try:
        parts = urlsplit(uri)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "the client's jwks_uri is not a valid URL"
    if not parts.hostname or parts.username or parts.password:
        return "the client's jwks_uri is not a valid URL"
    if settings.DEBUG:
        return None if parts.scheme in ("https", "http") else "the client's jwks_uri is not https"
    if parts.scheme != "https":
        return "the client's jwks_uri is not https"
    try:
        addresses = {
            info[4][0] for info in socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
        }
    except (OSError, UnicodeError):
        return "the client's jwks_uri does not resolve"
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            return "the client's jwks_uri resolves to a non-public address"
    return None


def _fetch_jwks(uri: str, *, force: bool = False) -> dict:
    """The one fetcher of a client's JWKS URI (agents and tool servers): refused targets never fetched
    (:func:`jwks_uri_refusal`), no redirects, a per-step timeout, a size cap, the answer cached, and a failure
    cached for :data:`JWKS_FAILURE_CACHE_SECONDS` so a bad URI is not fetched on every authentication."""
    cache_key = "gh:client-jwks:" + hashlib.sha256(uri.encode()).hexdigest()
    stamp_key = cache_key + ":fetched"
    failed_key = cache_key + ":failed"
    failure = cache.get(failed_key)
    if failure is not None:
        raise AssertionRejected(failure)
    if not force:
        cached = cache.get(cache_key)
        if cached is not None:
            return cached
    elif (cache.get(stamp_key) or 0) > time.time() - 30:
        return cache.get(cache_key) or {"keys": []}
    try:
        keys = _download_jwks(uri)
    except AssertionRejected as rejected:
        cache.set(failed_key, rejected.reason, JWKS_FAILURE_CACHE_SECONDS)
        raise
    cache.set(cache_key, keys, gatehouse_settings.CLIENT_JWKS_CACHE_SECONDS)
    cache.set(stamp_key, time.time(), gatehouse_settings.CLIENT_JWKS_CACHE_SECONDS)
    return keys


def _download_jwks(uri: str) -> dict:
    refusal = jwks_uri_refusal(uri)
    if refusal is not None:
        raise AssertionRejected(refusal)
    try:
        response = requests.get(
            uri,
            timeout=gatehouse_settings.CLIENT_JWKS_FETCH_TIMEOUT_SECONDS,
            allow_redirects=False,
            stream=True,
        )
        body = response.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
        response.close()
    except requests.RequestException:
        log.warning("fetching a client's jwks_uri failed")
        raise AssertionRejected("the client's jwks_uri could not be fetched") from None
    if response.status_code != 200 or len(body) > MAX_JWKS_BYTES:
        raise AssertionRejected("the client's jwks_uri did not answer with a JWK Set")
    try:
        keys = json.loads(body)
        if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
            raise ValueError
    except ValueError:
        raise AssertionRejected("the client's jwks_uri did not answer with a JWK Set") from None
    return keys


def _candidate_keys(jwks: dict, *, kid: str | None, alg: str) -> list[jwk.JWK]:
    kty = "OKP" if alg == "EdDSA" else "EC" if alg.startswith("ES") else "RSA"
    keys = []
    for member in jwks.get("keys", []):
        if not isinstance(member, dict) or member.get("kty") != kty:
            continue
        if kid is not None and member.get("kid") != kid:
            continue
        if member.get("use") not in (None, "sig"):
            continue
        key = _parsed_key(json.dumps(member, sort_keys=True))
        if key is not None and not key.has_private:
            keys.append(key)
    return keys


@lru_cache(maxsize=256)
def _parsed_key(member: str) -> jwk.JWK | None:
    """A registered JWK, parsed once per process.  Keyed by its content, so a changed key is a new entry."""
    try:
        return jwk.JWK(**json.loads(member))
    except Exception:  # a malformed registered key is skipped, not fatal
        return None


class _AssertionJWS(jws.JWS):
    """jwcrypto's JWS, sharing one header registry between objects.

    ``jws.JWS()`` deep-copies jwcrypto's header registry into every new object (about a tenth of a
    millisecond) so that a caller may add headers to its own copy.  Nothing here adds any: verification only
    reads the registry (supported and critical headers, ``b64``), so every assertion reads the same one.
    """

    _registry = JWSEHeaderRegistry(jws.JWSHeaderRegistry)

    def __init__(self):  # jws.JWS.__init__ less the copy (a test checks the attributes stay the same)
        self.objects = {"payload": None}
        self.verifylog = None
        self._allowed_algs = None
        self.header_registry = self._registry


def verify_assertion(
    assertion: str, *, client_id: str, jwks: dict, jwks_uri: str, audiences: set[str]
) -> VerifiedAssertion:
    """Verify a client assertion for ``client_id``; raise :class:`AssertionRejected` otherwise."""
    if not isinstance(assertion, str) or len(assertion) > MAX_ASSERTION_LENGTH:
        raise AssertionRejected("the assertion is missing or too long")
    try:
        parsed = _AssertionJWS()
        parsed.deserialize(assertion)
        header = parsed.jose_header
    except (JWException, ValueError, TypeError):
        raise AssertionRejected("the assertion is not a compact JWS") from None
    alg = header.get("alg") if isinstance(header, dict) else None
    if alg not in ALLOWED_ALGS:
        raise AssertionRejected("the assertion's algorithm is not allowed")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AssertionRejected("the assertion's kid is malformed")
    candidates = _candidate_keys(jwks, kid=kid, alg=alg) if jwks else []
    if not candidates and jwks_uri:
        candidates = _candidate_keys(_fetch_jwks(jwks_uri), kid=kid, alg=alg)
        if not candidates and kid is not None:  # the client may have rotated its keys since we cached them
            candidates = _candidate_keys(_fetch_jwks(jwks_uri, force=True), kid=kid, alg=alg)
    if not candidates:
        raise AssertionRejected("no registered key matches the assertion")
    claims = None
    parsed.allowed_algs = [alg]
    for key in candidates:  # the JWS parsed above is verified in place (header checks, crit included)
        try:
            parsed.verify(key, alg=alg)
            claims = json.loads(parsed.payload)
            break
        except (JWException, ValueError, TypeError):
            continue
    if not isinstance(claims, dict):
        raise AssertionRejected("the assertion's signature does not verify")
    return _check_claims(claims, client_id=client_id, audiences=audiences, kid=kid or "")


def _check_claims(claims: dict, *, client_id: str, audiences: set[str], kid: str) -> VerifiedAssertion:
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AssertionRejected("iss and sub must both be the client_id")
    aud = claims.get("aud")
    aud_values = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a in audiences for a in aud_values):
        raise AssertionRejected("aud must be the issuer or the endpoint")
    now = time.time()
    skew = gatehouse_settings.CLOCK_SKEW_SECONDS
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise AssertionRejected("exp is required")
    if exp <= now - skew:
        raise AssertionRejected("the assertion has expired")
    if exp > now + gatehouse_settings.CLIENT_ASSERTION_MAX_AGE_SECONDS + skew:
        raise AssertionRejected("the assertion lives too long")
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, int | float) or value > now + skew):
            raise AssertionRejected(f"{name} is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 255:
        raise AssertionRejected("jti is required")
    replay_key = "gh:jti:" + hashlib.sha256(f"{client_id}\x00{jti}".encode()).hexdigest()
    if not cache.add(replay_key, 1, timeout=int(exp - now + skew) + 1):
        raise AssertionRejected("the assertion was already used")
    return VerifiedAssertion(client_id=client_id, jti=jti, kid=kid)
