"""One-time approval links and CIBA request ids: random values handed out once, stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.urls import reverse

TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 64


def new_secret() -> tuple[str, str]:
    """A fresh URL-safe value and the hash that is stored in its place."""
    value = secrets.token_urlsafe(TOKEN_BYTES)
    return value, digest(value)


def digest(value: str) -> str:
    """SHA-256 of the value (hex).  The value has 256 random bits, so no salt or slow hash is needed."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def well_formed(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN_LENGTH and value.isascii()


def same(stored_hash: str, value: str) -> bool:
    return hmac.compare_digest(stored_hash, digest(value))


def link_url(token: str) -> str:
    """The absolute URL of an emailed link (the portal lives at the issuer's base URL)."""
    return settings.GATEHOUSE_ISSUER + reverse("approvals:link", kwargs={"token": token})
