"""What a decision can say: the checks, the stable reason codes, and the one sentence each gives the caller.

The sentences name no policy internals and no other user's data; the audit event holds the details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOKEN, SCOPE, USER, RATE, SERVICE = "token", "scope", "user", "rate", "service"

# reason code -> (check, sentence)
REASONS: dict[str, tuple[str, str]] = {
    "invalid_token": (TOKEN, "The access token is not a valid token from this issuer."),
    "token_expired": (TOKEN, "The access token has expired."),
    "token_revoked": (TOKEN, "The access token has been revoked."),
    "wrong_audience": (TOKEN, "The access token was not issued for this tool server."),
    "agent_inactive": (TOKEN, "The agent holding this token is not active."),
    "dpop_required": (TOKEN, "The access token is bound to a key; a DPoP proof is required."),
    "dpop_invalid": (TOKEN, "The DPoP proof is not valid for this token and call."),
    "insufficient_scope": (SCOPE, "The access token does not carry this capability."),
    "grant_inactive": (USER, "The grant behind this token is no longer active."),
    "constraint_violated": (USER, "The call's parameters are outside what this capability allows."),
    "step_up_required": (USER, "This capability needs a stronger or more recent authentication of the user."),
    "approval_required": (USER, "This call needs approval before it may proceed."),
    "rate_limited": (RATE, "Too many calls of this capability; retry later."),
    "quota_exceeded": (RATE, "The quota for this capability is used up; retry later."),
    "unavailable": (SERVICE, "The decision could not be made right now; the call is refused."),
}


@dataclass
class Denial(Exception):
    """A check refused the call.  ``detail`` (fixed machine words) goes to the audit event only;
    ``answer`` (``retry_after``, ``acr_values``, ``max_age``, ``scope``) goes into the answer's context."""

    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    answer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        super().__init__(self.reason)
        if self.reason not in REASONS:
            raise ValueError(f"unknown decision reason {self.reason!r}")

    @property
    def check(self) -> str:
        return REASONS[self.reason][0]

    @property
    def message(self) -> str:
        return REASONS[self.reason][1]
