"""Cleaning audit parameters: secrets and tokens masked, untrusted strings bounded, JSON-safe types only."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

MASK = "[masked]"
_TRUNCATED = "…[truncated]"
MAX_STRING = 512
MAX_ITEMS = 64
MAX_DEPTH = 6

_SECRET_KEY = re.compile(
    r"(pass(word)?|secret|token|assertion|authorization|cookie|credential|private|"
    r"verifier|otp|^code$|^d$|^p$|^q$|^dp$|^dq$|^qi$|^k$|signature|api[_-]?key|session)",
    re.IGNORECASE,
)
# Keys whose names contain "token" but whose values are identifiers, not secrets.
_SAFE_KEYS = {
    "jti",
    "token_type",
    "token_type_hint",
    "subject_token_type",
    "actor_token_type",
    "requested_token_type",
    "issued_token_type",
    "token_id",
    "tokens_revoked",
    "dpop_bound_tokens_required",
    "token_endpoint_auth_method",
}
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
# A credential in an Authorization-style value: "Bearer <token>", "DPoP <token>", "Basic <base64>".
_AUTH_VALUE = re.compile(r"\b(Bearer|DPoP|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
# Control characters, and lone surrogates (json.loads turns "\ud800" into one; UTF-8 cannot encode it).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def is_secret_key(key: str) -> bool:
    return key not in _SAFE_KEYS and bool(_SECRET_KEY.search(key))


def clean_string(value: str, limit: int = MAX_STRING) -> str:
    value = _CONTROL.sub("\ufffd", value)
    if _JWT_LIKE.search(value) or _PEM.search(value) or _AUTH_VALUE.search(value):
        return MASK
    if len(value) > limit:  # the result stays within ``limit`` (it may fill a bounded column)
        return value[: max(limit - len(_TRUNCATED), 0)] + _TRUNCATED[:limit]
    return value


def clean(value, depth: int = 0):
    """Return a JSON-safe copy of ``value`` with secret-looking members masked."""
    if depth > MAX_DEPTH:
        return "[too deep]"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, str):
        return clean_string(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_ITEMS:
                out["…"] = f"{len(value) - MAX_ITEMS} more"
                break
            key = clean_string(str(key), 128)
            out[key] = MASK if is_secret_key(key) and item not in (None, "") else clean(item, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
        cleaned = [clean(item, depth + 1) for item in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            cleaned.append(f"… {len(items) - MAX_ITEMS} more")
        return cleaned
    return clean_string(str(value))
