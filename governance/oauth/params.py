"""Bounds on the untrusted parameters of OAuth requests, stated once for every endpoint and grant.

The HTTP edge refuses a request that breaks them before it reaches oauthlib or a query
(:func:`governance.oauth.endpoint.check_params`); the grants and the direct path read the same limits.
"""

from __future__ import annotations

from collections.abc import Iterable

from governance.text import has_nul

MAX_CLIENT_ID_LENGTH = 255
MAX_SCOPE_LENGTH = 2000
MAX_SCOPES = 50
MAX_RESOURCE_LENGTH = 500
MAX_NAME_LENGTH = 64
DEFAULT_LIMIT = 8192

LIMITS = {
    "client_id": MAX_CLIENT_ID_LENGTH,
    "scope": MAX_SCOPE_LENGTH,
    "resource": MAX_RESOURCE_LENGTH,
    "grant_type": 64,
    "redirect_uri": 2000,
    "code_verifier": 128,
    "token_type_hint": 32,
}

# Parameters that may appear once.  DOT passes only the last value of a repeated parameter to oauthlib, so
# a repeat is refused.  ``audience`` may repeat in RFC 8693; Gatehouse issues for exactly one.
SINGLE_VALUED = frozenset(
    {
        "client_assertion",
        "client_assertion_type",
        "client_id",
        "grant_type",
        "code",
        "scope",
        "subject_token",
        "subject_token_type",
        "actor_token",
        "actor_token_type",
        "requested_token_type",
        "audience",
    }
)

TOO_LONG = "A request parameter is too long."
REPEATED = "A parameter that may appear once was repeated."
NUL = "A request parameter contains a NUL character."


def problem(items: Iterable[tuple[str, list[str]]]) -> str | None:
    """The fixed sentence for the first parameter (name, values) out of bounds, else None."""
    for key, values in items:
        limit = LIMITS.get(key, DEFAULT_LIMIT)
        if len(key) > MAX_NAME_LENGTH or any(len(v) > limit for v in values):
            return TOO_LONG
        if key in SINGLE_VALUED and len(values) > 1:
            return REPEATED
        if has_nul(key, *values):
            return NUL
    return None
