"""Ed25519 keys for signed checkpoints (cryptography), from settings or a file under var/."""

from __future__ import annotations

import base64
import hashlib
import os
from functools import cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver


def _load_or_create(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        if not settings.DEBUG:
            raise ImproperlyConfigured(
                "AUDIT_SIGNING_KEY or an existing AUDIT_SIGNING_KEY_FILE is required when DEBUG is off."
            )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; read theirs
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
    return _parse(path.read_bytes())


def _parse(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured("The audit signing key must be an Ed25519 private key in PEM form.")
    return key


@cache
def private_key() -> Ed25519PrivateKey:
    if settings.AUDIT_SIGNING_KEY:
        return _parse(settings.AUDIT_SIGNING_KEY.encode())
    return _load_or_create(Path(settings.AUDIT_SIGNING_KEY_FILE))


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


@cache
def current_key_id() -> str:
    return key_id(private_key().public_key())


def sign(message: bytes) -> tuple[str, str]:
    """Return (key id, base64 signature)."""
    return current_key_id(), base64.b64encode(private_key().sign(message)).decode()


def verify(message: bytes, *, signature: str, signer_key_id: str) -> bool:
    public = private_key().public_key()
    if signer_key_id != current_key_id():
        return False
    try:
        public.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True


@receiver(setting_changed)
def _forget_key(*, setting: str, **kwargs) -> None:
    if setting in ("AUDIT_SIGNING_KEY", "AUDIT_SIGNING_KEY_FILE"):
        private_key.cache_clear()
        current_key_id.cache_clear()
