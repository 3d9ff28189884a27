"""Keys that sign access tokens: stored in the database, private halves encrypted at rest.

The encryption key is derived from ``SECRET_KEY`` with HKDF-SHA256 and used through Fernet (AES-128-CBC +
HMAC-SHA256), so a database dump alone does not yield a signing key.  Changing ``SECRET_KEY`` makes the
stored keys unreadable: rotate the signing keys (``manage.py signing_keys rotate --now``) when you do.

Rotation (the service ``governance.services.signing_keys.signing_key_rotate``): a new key is published in
the JWKS at once and signs only after ``GATEHOUSE_SIGNING_KEY_PUBLISH_SECONDS`` (so cached JWKS copies learn
it first); the previous key signs until then and stays published until every token it signed has expired.
"""

from __future__ import annotations

import base64
import json
import time
from functools import lru_cache

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from jwcrypto import jwk

from governance.conf import gatehouse_settings
from governance.models import SigningKey
from governance.oauth.scoping import default_lifetime

CURVES = {"ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519")}


def _fernet() -> Fernet:
    return _fernet_for(settings.SECRET_KEY)


@lru_cache(maxsize=4)
def _fernet_for(secret_key: str) -> Fernet:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"gatehouse", info=b"gatehouse signing keys v1"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def longest_token_lifetime() -> int:
    """How long a token signed now may live: the broker's default lifetime bounds every token."""
    return default_lifetime()


def _new_key_material(alg: str) -> jwk.JWK:
    kty, curve = CURVES[alg]
    return jwk.JWK.generate(kty=kty, crv=curve)


def create_key(*, alg: str | None = None, activate_at=None) -> SigningKey:
    alg = alg or gatehouse_settings.SIGNING_ALG
    if alg not in CURVES:
        raise ValueError(f"unsupported signing algorithm {alg!r}; use ES256 or EdDSA")
    key = _new_key_material(alg)
    kid = key.thumbprint()
    public = json.loads(key.export_public())
    public.update({"kid": kid, "alg": alg, "use": "sig"})
    pem = key.export_to_pem(private_key=True, password=None)
    return SigningKey.objects.create(
        kid=kid,
        alg=alg,
        private_key_encrypted=_fernet().encrypt(pem).decode(),
        public_jwk=public,
        activated_at=activate_at or timezone.now(),
    )


# The signing key is read once per process every few seconds, not once per token.  Safe because rotation
# publishes a key before it signs and keeps a retired key published for longer than any token it signed
# lives: a process that learns of a rotation up to this late still signs with a published key.  The
# rotation service forgets the cached key at once in its own process.
_cached: tuple[float, SigningKey, jwk.JWK] | None = None


def forget_signing_key() -> None:
    """Drop this process's cached keys, the one that signs and the published ones that verify (after a
    rotation; tests whose database is reset)."""
    global _cached, _verifying
    _cached = None
    _verifying = None


def signing_key() -> tuple[SigningKey, jwk.JWK]:
    """The key that signs now (created on first use, so a fresh install works without a command)."""
    global _cached
    cached, now = _cached, time.monotonic()
    if cached is not None and now < cached[0]:
        return cached[1], cached[2]
    key = SigningKey.objects.signing().order_by("-activated_at").first()
    if key is None:
        with transaction.atomic():
            key = SigningKey.objects.select_for_update().signing().order_by("-activated_at").first()
            if key is None:
                key = create_key()
    private = _private_jwk(key.pk, key.private_key_encrypted)
    seconds = gatehouse_settings.SIGNING_KEY_CACHE_SECONDS
    if key.retired_at is not None:  # never cache past the key's own retirement
        seconds = min(seconds, (key.retired_at - timezone.now()).total_seconds())
    # Cached only after the creating transaction (if any) is over; a rolled-back key is never remembered.
    if seconds > 0 and not transaction.get_connection().in_atomic_block:
        _cached = (now + seconds, key, private)
    return key, private


@lru_cache(maxsize=16)
def _private_jwk(pk: int, encrypted: str) -> jwk.JWK:
    return jwk.JWK.from_pem(_fernet().decrypt(encrypted.encode()))


def published_keys():
    return SigningKey.objects.published(
        grace_seconds=longest_token_lifetime() + gatehouse_settings.CLOCK_SKEW_SECONDS
    )


def jwks() -> dict:
    """The public JWK Set served at ``jwks_uri``."""
    if not SigningKey.objects.exists():
        signing_key()
    return {"keys": [key.public_jwk for key in published_keys().order_by("-activated_at")]}


def public_jwk_set() -> jwk.JWKSet:
    keyset = jwk.JWKSet()
    for key in published_keys():
        keyset.add(jwk.JWK(**key.public_jwk))
    return keyset


# Keys that verify access tokens, by kid, read once per process every few seconds (the same reasoning as the
# signing key's cache: a key is published long before it signs).  An unknown kid re-reads at once, at most
# once a second, so a key rotated in with ``--now`` is found and random kids cannot flood the database.
_verifying: tuple[float, dict[str, jwk.JWK]] | None = None
_verifying_reread_at = 0.0


def verification_key(kid: str) -> jwk.JWK | None:
    """The published public key named ``kid`` (None when no published key has that kid)."""
    global _verifying, _verifying_reread_at
    now = time.monotonic()
    cached = _verifying
    if cached is not None and now < cached[0] and (kid in cached[1] or now < _verifying_reread_at):
        return cached[1].get(kid)
    keys = {key.kid: jwk.JWK(**key.public_jwk) for key in published_keys()}
    seconds = gatehouse_settings.SIGNING_KEY_CACHE_SECONDS
    if seconds > 0:
        _verifying = (now + seconds, keys)
        _verifying_reread_at = now + 1.0
    return keys.get(kid)
