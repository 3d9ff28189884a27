"""What a short, human-readable value may contain: the one rule for names, descriptions and attributes.

Names and attribute values are shown to people (the admin, consent pages, approval e-mails) and stored in
PostgreSQL, which refuses NUL in text.  So they hold no control characters (tab and line breaks only where a
value may span lines), no lone surrogates (not encodable as UTF-8), no line or paragraph separators and no
bidirectional formatting characters (U+202E and friends reorder what a reader sees: "visual spoofing").
"""

from __future__ import annotations

import re
import unicodedata

from django.core.exceptions import ValidationError

# Unicode's bidirectional formatting characters (UAX #9 §2): embeddings, overrides, isolates and marks.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_REFUSED_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}
_MULTILINE_ALLOWED = frozenset("\t\n\r")


def has_nul(*values: str) -> bool:
    """Whether any value holds a NUL character: PostgreSQL refuses it in text, so no request value that may
    reach a query may hold one (the edge's rule: OAuth parameters, query strings)."""
    return any("\x00" in value for value in values)


def text_problem(value: str, *, max_length: int, multiline: bool = False) -> str | None:
    """Why ``value`` is not acceptable text (a sentence that never echoes the value), or None."""
    if len(value) > max_length:
        return f"is {len(value)} characters long; at most {max_length} are allowed"
    for char in value:
        if multiline and char in _MULTILINE_ALLOWED:
            continue
        if char in BIDI_CONTROLS:
            return "contains bidirectional formatting characters"
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return "contains control characters"
    return None


class SafeText:
    """A Django validator for :func:`text_problem` (length is left to the field's own ``max_length``)."""

    def __init__(self, *, multiline: bool = False) -> None:
        self.multiline = multiline

    def __call__(self, value) -> None:
        if isinstance(value, str):
            problem = text_problem(value, max_length=len(value), multiline=self.multiline)
            if problem:
                raise ValidationError(f"This value {problem}.", code="unsafe_text")

    def __eq__(self, other) -> bool:
        return isinstance(other, SafeText) and other.multiline == self.multiline

    def deconstruct(self):
        kwargs = {"multiline": True} if self.multiline else {}
        return ("governance.text.SafeText", (), kwargs)


# An OAuth client_id an admin or a policy file may choose: URL- and header-safe printable ASCII, 8 to 100
# characters, starting with a letter or digit (RFC 6749 §A.1 allows more; Gatehouse generates 40).
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{7,99}\Z")
CLIENT_ID_HINT = "a client id: 8 to 100 letters, digits and . _ ~ -, starting with a letter or digit"


def client_id_problem(value) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if problem := text_problem(value, max_length=100):
        return problem
    if not CLIENT_ID.match(value):
        return f"is not {CLIENT_ID_HINT}"
    return None
