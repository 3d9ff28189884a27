"""Strict parsing of compact JWS segments shared by the token and DPoP checks (verification is jwcrypto's)."""

from __future__ import annotations

import json
import re
from typing import Any

from jwcrypto.common import base64url_decode

MAX_JWT_BYTES = 8192
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
MAX_NUMERIC_DATE = 2**53


class Malformed(ValueError):
    """Not a compact JWS with JSON-object segments."""


def _refuse_constant(name: str) -> None:
    raise ValueError("NaN and Infinity are not JSON")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate member")
        result[key] = value
    return result


def json_segment(segment: str) -> tuple[dict[str, Any], bytes]:
    """A base64url segment decoded to a JSON object (no duplicate members, no NaN), with its raw bytes."""
    try:
        raw = base64url_decode(segment)
        value = json.loads(raw, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        raise Malformed from None
    if not isinstance(value, dict):
        raise Malformed
    return value, raw


def split(compact: object) -> tuple[str, str, str]:
    """The three segments of a compact JWS of bounded size; :class:`Malformed` otherwise."""
    if not isinstance(compact, str) or len(compact) > MAX_JWT_BYTES or not COMPACT_JWS.fullmatch(compact):
        raise Malformed
    header, payload, signature = compact.split(".")
    return header, payload, signature


def numeric_date(value: object) -> int | None:
    """An integer-valued NumericDate in a sane range, else None (bools, NaN, strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < MAX_NUMERIC_DATE:
        return None
    return int(value)
