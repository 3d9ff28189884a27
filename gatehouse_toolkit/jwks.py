"""Gatehouse's signing keys, fetched from the issuer's ``jwks_uri`` and cached.

The cache answers from memory.  It fetches again when its copy is older than ``jwks_max_age``, or when a
token names a ``kid`` it does not hold (a key rotation) -- but at most once per ``jwks_min_refresh`` seconds
whatever the reason, so tokens with forged ``kid`` values cost nothing after the first and never cause a
fetch storm.  A failed fetch keeps the keys already held.  Keys come only from the configured issuer: the
``jwks_uri`` is taken from settings or from the issuer's RFC 8414 metadata, whose ``issuer`` must equal the
configured one exactly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import httpx
from jwcrypto import jwk

from gatehouse_toolkit.settings import ToolServerSettings

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 64 * 1024
MAX_KEYS = 32
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_SIGNING_KTY = frozenset({"EC", "OKP", "RSA"})


class JWKSUnavailable(Exception):
    """The keys could not be fetched (and none are held)."""


def _get_json(http: httpx.Client, url: str) -> dict:
    response = http.get(url, headers={"Accept": "application/json"})
    if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
        raise JWKSUnavailable(f"{url} answered {response.status_code}")
    document = response.json()
    if not isinstance(document, dict):
        raise JWKSUnavailable(f"{url} did not answer a JSON object")
    return document


def signing_keys(document: dict, allowed_algs: tuple[str, ...]) -> dict[str, jwk.JWK]:
    """The usable public signing keys of a JWKS document, by ``kid``; anything else is skipped."""
    keys: dict[str, jwk.JWK] = {}
    for member in (document.get("keys") or [])[:MAX_KEYS]:
        if not isinstance(member, dict) or member.get("kty") not in _SIGNING_KTY:
            continue
        kid = member.get("kid")
        if not isinstance(kid, str) or not kid or _PRIVATE_MEMBERS.intersection(member):
            continue
        if member.get("use", "sig") != "sig" or member.get("alg", allowed_algs[0]) not in allowed_algs:
            continue
        try:
            keys[kid] = jwk.JWK(**member)
        except Exception:  # jwcrypto raises several types for malformed keys
            log.warning("JWKS: skipped a malformed key")
    return keys


class JWKSCache:
    """The issuer's public keys by ``kid``; thread-safe; at most one fetch per ``jwks_min_refresh``."""

    def __init__(
        self,
        settings: ToolServerSettings,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout)
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwk.JWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._jwks_uri = settings.jwks_uri
        self.fetches = 0

    def key(self, kid: str) -> jwk.JWK | None:
        """The key named ``kid``; the set is fetched first when stale or without it (rate-limited)."""
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self.settings.jwks_max_age
        key = self._keys.get(kid)
        if key is not None and not stale:
            return key
        self._refresh(now)
        return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        with self._lock:
            # Another thread may have fetched while this one waited; the rate limit covers failures too.
            if self._attempted_at is not None and now - self._attempted_at < self.settings.jwks_min_refresh:
                return
            self._attempted_at = self._clock()
            try:
                self.fetches += 1
                document = _get_json(self._http, self._discover_jwks_uri())
                keys = signing_keys(document, self.settings.token_algs)
            except (httpx.HTTPError, ValueError, JWKSUnavailable) as exc:
                log.warning(
                    "JWKS fetch from %s failed (%s); keeping %d keys",
                    self.settings.issuer,
                    type(exc).__name__,
                    len(self._keys),
                )
                return
            self._keys = keys
            self._fetched_at = self._attempted_at

    def _discover_jwks_uri(self) -> str:
        if self._jwks_uri is None:
            metadata = _get_json(self._http, self.settings.authorization_server_metadata_url)
            if metadata.get("issuer") != self.settings.issuer:
                raise JWKSUnavailable("the metadata's issuer is not the configured issuer")
            uri = metadata.get("jwks_uri")
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                raise JWKSUnavailable("the metadata names no usable jwks_uri")
            if uri.startswith("http://") and not self.settings.issuer.startswith("http://"):
                raise JWKSUnavailable("an https issuer's jwks_uri must be https")
            self._jwks_uri = uri
        return self._jwks_uri

    def close(self) -> None:
        """Close the HTTP connections kept open to the issuer."""
        self._http.close()

    def load(self, document: dict | str) -> None:
        """Hold these keys as if just fetched (tests, or a tool server that ships the JWKS in its config)."""
        if isinstance(document, str):
            document = json.loads(document)
        with self._lock:
            self._keys = signing_keys(document, self.settings.token_algs)
            self._fetched_at = self._attempted_at = self._clock()
