"""The HTTP answers a tool server gives when it refuses a call (RFC 6750 §3, RFC 9449 §7.1, RFC 9470 §3,
RFC 9728 §5.1).

A :class:`Challenge` is a status, headers and a small JSON body; each adapter turns it into its framework's
response.  Parameter values are quoted strings with ``\\`` and ``"`` escaped and control characters
dropped, so nothing a caller sent can break the header.  Every 401/403 names the protected-resource
metadata (``resource_metadata``) so that a client can find the authorization server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gatehouse_toolkit.settings import ToolServerSettings


def quoted(value: str) -> str:
    """An RFC 9110 quoted-string."""
    clean = "".join(char for char in str(value) if char == "\t" or 0x20 <= ord(char) != 0x7F)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def www_authenticate(scheme: str, params: list[tuple[str, str]]) -> str:
    """``Scheme name="value", ...`` in the order given."""
    if not params:
        return scheme
    return f"{scheme} " + ", ".join(f"{name}={quoted(value)}" for name, value in params)


@dataclass(frozen=True)
class Challenge:
    """A refusal, ready to send: status, headers and a JSON body ``{"error", "error_description"}``."""

    status: int
    error: str
    description: str
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    def body(self) -> dict:
        body = {"error": self.error, "error_description": self.description}
        if self.reason:
            body["reason"] = self.reason
        return body

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


class Challenges:
    """Builds the challenges of one tool server (its metadata URL and DPoP algorithms are in ``settings``)."""

    def __init__(self, settings: ToolServerSettings):
        self.settings = settings

    def _auth_params(self, scheme: str) -> list[tuple[str, str]]:
        params = [("resource_metadata", self.settings.metadata_url)]
        if scheme == "DPoP":
            params.append(("algs", " ".join(self.settings.dpop_algs)))
        return params

    def missing_token(self, *, scheme: str = "Bearer") -> Challenge:
        """No credentials at all: 401 with no error code (RFC 6750 §3.1), naming the metadata."""
        header = www_authenticate(scheme, self._auth_params(scheme))
        return Challenge(401, "invalid_request", "An access token is required.", {"WWW-Authenticate": header})

    def invalid_token(
        self, description: str, *, scheme: str = "Bearer", error: str = "invalid_token", reason: str = ""
    ) -> Challenge:
        """401 ``invalid_token`` (or ``invalid_dpop_proof`` for a bad proof, RFC 9449 §7.1)."""
        params = [("error", error), ("error_description", description), *self._auth_params(scheme)]
        header = www_authenticate(scheme, params)
        return Challenge(401, error, description, {"WWW-Authenticate": header}, reason)

    def insufficient_scope(self, scope: str, description: str, *, scheme: str = "Bearer") -> Challenge:
        """403 ``insufficient_scope`` with the ``scope`` needed (RFC 6750 §3.1, RFC 9728 §5.1)."""
        params = [
            ("error", "insufficient_scope"),
            ("error_description", description),
            ("scope", scope),
            *self._auth_params(scheme),
        ]
        header = www_authenticate(scheme, params)
        return Challenge(
            403, "insufficient_scope", description, {"WWW-Authenticate": header}, "insufficient_scope"
        )

    def insufficient_user_authentication(
        self,
        description: str,
        *,
        acr_values: str | None = None,
        max_age: int | None = None,
        scheme: str = "Bearer",
    ) -> Challenge:
        """401 ``insufficient_user_authentication`` with ``acr_values`` and/or ``max_age`` (RFC 9470 §3)."""
        params = [("error", "insufficient_user_authentication"), ("error_description", description)]
        if acr_values:
            params.append(("acr_values", acr_values))
        if max_age is not None:
            params.append(("max_age", str(int(max_age))))
        params.extend(self._auth_params(scheme))
        header = www_authenticate(scheme, params)
        return Challenge(
            401,
            "insufficient_user_authentication",
            description,
            {"WWW-Authenticate": header},
            "step_up_required",
        )

    def rate_limited(self, reason: str, description: str, retry_after: int | None) -> Challenge:
        """429 with ``Retry-After`` (seconds)."""
        headers = {"Retry-After": str(max(1, int(retry_after)))} if retry_after is not None else {}
        return Challenge(429, reason, description, headers, reason)

    def forbidden(self, reason: str, description: str) -> Challenge:
        """403 naming the reason in the body (constraint, grant, approval)."""
        return Challenge(403, reason, description, {}, reason)

    def unavailable(self, description: str = "Authorization could not be checked; retry later.") -> Challenge:
        """503: the decision could not be obtained, so the call is refused (fail closed)."""
        return Challenge(503, "temporarily_unavailable", description, {"Retry-After": "5"}, "unavailable")
