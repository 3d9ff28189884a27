"""The exact action an approver sees: RFC 9396 ``authorization_details`` and the binding message, checked.

Both come from agents, so both are untrusted: the shape (a JSON array of objects, each with a ``type`` that
names the capability), the size, the depth and every string are checked before anything is stored, and a
refusal says which rule failed without echoing the value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from approvals.models import MAX_BINDING_MESSAGE
from governance.errors import InvalidInput

MAX_DETAILS_BYTES = 8 * 1024
MAX_OBJECTS = 10
MAX_DEPTH = 5
MAX_KEYS = 32
MAX_ITEMS = 64
MAX_KEY_LENGTH = 64
MAX_STRING = 1000
MAX_INT = 2**53  # beyond this a JSON number is not exact in every reader (RFC 8259 §6)

# C0/C1 controls (NUL included), DEL, lone surrogates, and the bidirectional controls that let a string
# display differently from what it is (Trojan Source, CVE-2021-42574).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
LINE_BREAKS = str.maketrans("\t\n\r", "   ")
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*\Z")


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(message, errors={"authorization_details": [message]})


def _check_string(value: str, where: str) -> None:
    if len(value) > MAX_STRING:
        raise _refuse(f"{where}: a string is longer than {MAX_STRING} characters.")
    if UNSAFE.search(value):
        raise _refuse(f"{where}: a string holds control or bidirectional characters.")


def _check_value(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _refuse(f"{where}: nested deeper than {MAX_DEPTH} levels.")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise _refuse(f"{where}: a number is too large.")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _refuse(f"{where}: numbers must be finite.")
        return
    if isinstance(value, str):
        _check_string(value, where)
        return
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise _refuse(f"{where}: a list has more than {MAX_ITEMS} items.")
        for item in value:
            _check_value(item, where, depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > MAX_KEYS:
            raise _refuse(f"{where}: an object has more than {MAX_KEYS} members.")
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH or not KEY.match(key):
                raise _refuse(f"{where}: member names are short identifiers (letters, digits, _ . : -).")
            _check_value(item, where, depth + 1)
        return
    raise _refuse(f"{where}: only JSON values are allowed.")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise _refuse("authorization_details: a member name appears twice in one object.")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise _refuse("authorization_details: numbers must be finite.")


def parse_details(raw: str | bytes) -> Any:
    """``authorization_details`` sent as a JSON string (a form parameter, RFC 9396): parsed, not checked."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse("authorization_details: not UTF-8.") from None
    if not isinstance(raw, str) or len(raw.encode("utf-8", "surrogatepass")) > MAX_DETAILS_BYTES:
        raise _refuse(f"authorization_details: larger than {MAX_DETAILS_BYTES} bytes.")
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise _refuse("authorization_details: not valid JSON.") from None


def clean_details(details: Any, *, capability_key: str) -> list[dict[str, Any]]:
    """The checked ``authorization_details``: 1 to 10 objects, each of ``type`` ``capability_key``."""
    if not isinstance(details, list) or not 1 <= len(details) <= MAX_OBJECTS:
        raise _refuse(f"authorization_details: a JSON array of 1 to {MAX_OBJECTS} objects.")
    for index, item in enumerate(details):
        where = f"authorization_details[{index}]"
        if not isinstance(item, dict):
            raise _refuse(f"{where}: each entry is a JSON object.")
        if item.get("type") != capability_key:
            raise _refuse(f"{where}: type must be the capability asked for ({capability_key}).")
        _check_value(item, where, 1)
    try:
        size = len(json.dumps(details, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (ValueError, UnicodeEncodeError):
        raise _refuse("authorization_details: not representable as JSON.") from None
    if size > MAX_DETAILS_BYTES:
        raise _refuse(f"authorization_details: larger than {MAX_DETAILS_BYTES} bytes.")
    return details


def clean_binding_message(message: Any) -> str:
    """The short text shown to approvers beside the action (CIBA ``binding_message``): plain, bounded."""
    if message is None:
        return ""
    if not isinstance(message, str):
        raise InvalidInput("binding_message: text.", errors={"binding_message": ["Not text."]})
    if UNSAFE.search(message.translate(LINE_BREAKS)):
        raise InvalidInput(
            "binding_message: control or bidirectional characters are not allowed.",
            errors={"binding_message": ["Unsafe characters."]},
        )
    message = " ".join(message.split())  # tabs and line breaks become single spaces
    if len(message) > MAX_BINDING_MESSAGE:
        raise InvalidInput(
            f"binding_message: at most {MAX_BINDING_MESSAGE} characters.",
            errors={"binding_message": ["Too long."]},
        )
    return message
