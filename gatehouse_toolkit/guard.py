"""One object a tool server holds: offline token and DPoP checks, the decision API, and the challenges.

Adapters (:mod:`.asgi`, :mod:`.drf`, :mod:`.mcp`) are thin: they read the request's ``Authorization`` and
``DPoP`` headers, call :meth:`ToolServerGuard.authenticate` once per request and
:meth:`ToolServerGuard.authorize` once per tool call, and turn a :class:`Refused` into their framework's
response.
"""

from __future__ import annotations

from dataclasses import dataclass

from gatehouse_toolkit.challenges import Challenge, Challenges
from gatehouse_toolkit.decisions import Decision, DecisionClient
from gatehouse_toolkit.dpop import DPoPVerifier, ProofRejected, ReplayCache
from gatehouse_toolkit.jwks import JWKSCache
from gatehouse_toolkit.metadata import protected_resource_metadata
from gatehouse_toolkit.settings import ToolServerSettings
from gatehouse_toolkit.tokens import AccessTokenVerifier, TokenRejected, VerifiedToken

MAX_TOKEN = 8192
_RATE = frozenset({"rate_limited", "quota_exceeded"})


class Refused(Exception):
    """The request or call is refused; ``challenge`` is the answer to send."""

    def __init__(self, challenge: Challenge, decision: Decision | None = None):
        super().__init__(challenge.description)
        self.challenge = challenge
        self.decision = decision


@dataclass(frozen=True)
class Caller:
    """An authenticated request: the verified token, how it was presented, and the request it came with."""

    token: VerifiedToken
    scheme: str  # "Bearer" or "DPoP"
    method: str
    url: str
    proof: str | None = None


def parse_authorization(header: str | None) -> tuple[str, str]:
    """(``Bearer``/``DPoP``/"", token) from an ``Authorization`` header value."""
    if not isinstance(header, str):
        return "", ""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if not token or len(token) > MAX_TOKEN or " " in token:
        return "", ""
    return {"bearer": "Bearer", "dpop": "DPoP"}.get(scheme.lower(), ""), token


class ToolServerGuard:
    """Everything a tool server needs to accept or refuse a call, built from its settings."""

    def __init__(
        self,
        settings: ToolServerSettings,
        *,
        keys: JWKSCache | None = None,
        replay_cache: ReplayCache | None = None,
        decisions: DecisionClient | None = None,
    ):
        self.settings = settings
        self.tokens = AccessTokenVerifier(settings, keys=keys)
        self.dpop = DPoPVerifier(settings, replay_cache=replay_cache)
        self._decisions = decisions
        self.challenges = Challenges(settings)

    @property
    def decisions(self) -> DecisionClient:
        if self._decisions is None:
            self._decisions = DecisionClient(self.settings)
        return self._decisions

    def close(self) -> None:
        """Close the HTTP connections the guard keeps open to Gatehouse (JWKS and decisions)."""
        self.tokens.keys.close()
        if self._decisions is not None:
            self._decisions.close()

    async def aclose(self) -> None:
        """:meth:`close`, and the async decision client's connections too (from the server's loop)."""
        self.tokens.keys.close()
        if self._decisions is not None:
            await self._decisions.aclose()

    def metadata(self) -> dict:
        return protected_resource_metadata(self.settings)

    # --- offline: once per request --------------------------------------------------------------------
    def authenticate(self, *, authorization: str | None, dpop: list[str], method: str, url: str) -> Caller:
        """Verify the request's token (and proof, for a DPoP-bound token) offline, or raise :class:`Refused`.

        ``url`` is the request URL as clients reach this tool server (``settings.url_for(path)``).
        """
        scheme, value = parse_authorization(authorization)
        if not scheme:
            raise Refused(self.challenges.missing_token())
        try:
            token = self.tokens.verify(value)
        except TokenRejected as exc:
            raise Refused(
                self.challenges.invalid_token(exc.description, scheme=scheme, reason=exc.code)
            ) from None
        if scheme == "Bearer":
            if token.dpop_bound:  # RFC 9449 §7.2: a bound token never passes as a Bearer token
                raise Refused(
                    self.challenges.invalid_token(
                        "The access token is bound to a key; present it with the DPoP scheme and a proof.",
                        scheme="DPoP",
                        reason="dpop_required",
                    )
                )
            return Caller(token=token, scheme=scheme, method=method.upper(), url=url)
        if not token.dpop_bound:
            raise Refused(
                self.challenges.invalid_token(
                    "The access token is not bound to a DPoP key; present it as a Bearer token.",
                    reason="invalid_token",
                )
            )
        try:
            proof = self.dpop.verify(proofs=dpop, method=method, url=url, access_token=value, jkt=token.jkt)
        except ProofRejected as exc:
            raise Refused(
                self.challenges.invalid_token(
                    exc.description, scheme="DPoP", error="invalid_dpop_proof", reason=exc.code
                )
            ) from None
        return Caller(token=token, scheme=scheme, method=method.upper(), url=url, proof=proof.proof)

    # --- online: once per tool call -------------------------------------------------------------------
    def _request(self, caller: Caller, capability: str, tool: str | None, parameters: dict | None) -> dict:
        return {
            "token": caller.token.token,
            "capability": capability,
            "tool": tool or capability,
            "parameters": parameters or {},
            "method": caller.method,
            "url": caller.url,
            "dpop": caller.proof,
            "agent_id": caller.token.client_id,
        }

    def authorize(
        self, caller: Caller, *, capability: str, tool: str | None = None, parameters: dict | None = None
    ) -> Decision:
        """Ask Gatehouse whether this call may proceed; the allowing :class:`Decision`, else :class:`Refused`.

        Gatehouse is asked even when the token plainly lacks ``capability``: every decision, a refused
        elevation included, is then one audit event there.
        """
        decision = self.decisions.evaluate(**self._request(caller, capability, tool, parameters))
        return self._allowed_or_refused(decision, caller, capability)

    async def aauthorize(
        self, caller: Caller, *, capability: str, tool: str | None = None, parameters: dict | None = None
    ) -> Decision:
        """The async twin of :meth:`authorize`."""
        decision = await self.decisions.aevaluate(**self._request(caller, capability, tool, parameters))
        return self._allowed_or_refused(decision, caller, capability)

    def _allowed_or_refused(self, decision: Decision, caller: Caller, capability: str) -> Decision:
        if decision.allowed:
            return decision
        raise Refused(self.challenge_for(decision, scheme=caller.scheme, capability=capability), decision)

    def challenge_for(self, decision: Decision, *, scheme: str = "Bearer", capability: str = "") -> Challenge:
        """The HTTP answer for a denial (the mapping in docs/toolkit.md)."""
        c, reason, message = self.challenges, decision.reason or "denied", decision.message
        if reason == "unavailable" or decision.check == "service":
            return c.unavailable(message or None)
        if reason == "dpop_invalid":
            return c.invalid_token(message, scheme="DPoP", error="invalid_dpop_proof", reason=reason)
        if reason == "dpop_required":
            return c.invalid_token(message, scheme="DPoP", reason=reason)
        if decision.check == "token":
            return c.invalid_token(message, scheme=scheme, reason=reason)
        if reason == "insufficient_scope":
            return c.insufficient_scope(decision.scope or capability, message, scheme=scheme)
        if reason == "step_up_required":
            return c.insufficient_user_authentication(
                message, acr_values=decision.acr_values, max_age=decision.max_age, scheme=scheme
            )
        if reason in _RATE:
            return c.rate_limited(reason, message, decision.retry_after)
        return c.forbidden(reason, message)
