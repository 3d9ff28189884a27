"""The MCP Python SDK (``mcp`` >= 2.3): a ``TokenVerifier`` and a per-tool check.

Build an ``MCPServer`` with ``token_verifier=GatehouseTokenVerifier(guard)`` and
``auth=auth_settings(guard)``: the SDK then serves the RFC 9728 document, refuses requests without a valid
token with a ``resource_metadata`` challenge, and keeps the verified token for the request.  Inside each tool,
``await check.require("records.read_own", {"patient_id": patient_id}, tool="read_patient_record")`` asks
Gatehouse's decision API about this exact call; a denial raises ``ToolError``, which the SDK returns as an
error result (``is_error``) naming the reason.

The SDK's server middleware reads only ``Authorization: Bearer``; a DPoP-bound token is therefore refused
here (it would arrive without its proof).  Serve DPoP clients through :mod:`gatehouse_toolkit.asgi`.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ToolError

from gatehouse_toolkit.decisions import Decision
from gatehouse_toolkit.guard import Caller, Refused, ToolServerGuard
from gatehouse_toolkit.tokens import TokenRejected, VerifiedToken


def auth_settings(guard: ToolServerGuard, *, required_scopes: list[str] | None = None) -> AuthSettings:
    """The SDK's settings for a resource server whose tokens come from Gatehouse."""
    settings = guard.settings
    return AuthSettings(
        issuer_url=settings.issuer,
        resource_server_url=settings.resource,
        required_scopes=required_scopes,
        validate_token_resource=True,
    )


class GatehouseTokenVerifier(TokenVerifier):
    """Verifies Gatehouse access tokens offline (signature, issuer, audience, expiry, claims)."""

    def __init__(self, guard: ToolServerGuard):
        self.guard = guard

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            verified = await anyio.to_thread.run_sync(self.guard.tokens.verify, token)
        except TokenRejected:
            return None
        if verified.dpop_bound:
            return None  # RFC 9449 §7.2: a key-bound token never passes as a Bearer token
        return AccessToken(
            token=token,
            client_id=verified.client_id,
            scopes=list(verified.scopes),
            expires_at=verified.expires_at,
            resource=self.guard.settings.resource,
            subject=verified.subject,
            claims=verified.claims,
        )


def denial_text(decision: Decision | None, fallback: str) -> str:
    """What the agent reads in the error result: the stable reason, the sentence, what to ask for."""
    if decision is None:
        return fallback
    text = f"{decision.reason}: {decision.message}"
    if decision.reason == "step_up_required":
        text += f" (acr_values={decision.acr_values or ''}, max_age={decision.max_age})"
    if decision.retry_after is not None:
        text += f" (retry after {decision.retry_after} s)"
    return text


class ToolCheck:
    """The per-tool check: asks the decision API about this tool call with its arguments."""

    def __init__(self, guard: ToolServerGuard, *, url: str | None = None):
        self.guard = guard
        self.url = url or guard.settings.resource

    def caller(self) -> Caller:
        access = get_access_token()
        if access is None or not access.claims:
            raise ToolError("invalid_token: the call carries no verified access token.")
        claims = access.claims
        token = VerifiedToken(
            token=access.token,
            claims=claims,
            subject=access.subject or "",
            client_id=access.client_id,
            scopes=tuple(access.scopes),
            jti=str(claims.get("jti", "")),
            expires_at=access.expires_at or 0,
            jkt=None,
        )
        return Caller(token=token, scheme="Bearer", method="POST", url=self.url)

    async def require(
        self, capability: str, arguments: dict[str, Any], *, tool: str | None = None
    ) -> Decision:
        """The allowing decision, or ``ToolError`` naming the reason."""
        try:
            return await self.guard.aauthorize(
                self.caller(), capability=capability, tool=tool or capability, parameters=arguments
            )
        except Refused as refused:
            raise ToolError(denial_text(refused.decision, refused.challenge.description)) from None
