"""A client for Gatehouse's decision API (OpenID AuthZEN shape): "may this exact tool call proceed?".

Offline checks see only what the token says.  The decision API also sees what changed since it was issued
(agent suspended, grant revoked, user deactivated), checks the call's parameters against the capability's
constraints for this user (the confused-deputy check), and counts rate limits and quotas.  Every call is
authenticated as the tool server (HTTP Basic with its client secret, or a fresh single-use
``private_key_jwt`` assertion), and every failure to get a well-formed answer in bounded time -- connection
refused, timeout, a non-200 status, a body of the wrong shape -- is a denial with reason ``unavailable``:
the toolkit fails closed.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
from jwcrypto import jwk, jwt

from gatehouse_toolkit.settings import ToolServerSettings

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024
MAX_MESSAGE = 300
ASSERTION_LIFETIME = 60
_ALG_FOR_KEY = {("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("OKP", "Ed25519"): "EdDSA"}
_CHECKS = frozenset({"token", "scope", "user", "rate", "service"})
UNAVAILABLE_MESSAGE = "Authorization could not be checked; retry later."


@dataclass(frozen=True)
class Decision:
    """One answer.  On a denial ``reason`` is a stable code and ``check`` the failing stage."""

    allowed: bool
    decision_id: str | None = None
    reason: str | None = None
    check: str | None = None
    message: str = ""
    retry_after: int | None = None
    acr_values: str | None = None
    max_age: int | None = None
    scope: str | None = None

    @classmethod
    def unavailable(cls) -> Decision:
        return cls(False, reason="unavailable", check="service", message=UNAVAILABLE_MESSAGE)

    @classmethod
    def from_answer(cls, answer: Any) -> Decision:
        """Read a ``{"decision": bool, "context": {...}}`` answer; anything else is ``unavailable``."""
        if not isinstance(answer, dict) or not isinstance(answer.get("decision"), bool):
            return cls.unavailable()
        context = answer.get("context")
        context = context if isinstance(context, dict) else {}
        decision_id = _text(context.get("decision_id"), 128)
        if answer["decision"] is True:
            return cls(True, decision_id=decision_id)
        reason = _text(context.get("reason"), 64) or "denied"
        check = context.get("check") if context.get("check") in _CHECKS else None
        return cls(
            False,
            decision_id=decision_id,
            reason=reason,
            check=check,
            message=_text(context.get("message"), MAX_MESSAGE) or "The call is not allowed.",
            retry_after=_count(context.get("retry_after")),
            acr_values=_text(context.get("acr_values"), 512),
            max_age=_count(context.get("max_age")),
            scope=_text(context.get("scope"), 256),
        )


def _text(value: Any, limit: int) -> str | None:
    if isinstance(value, list):
        value = " ".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9 else None


def evaluation_request(
    *,
    token: str,
    capability: str,
    tool: str,
    parameters: dict[str, Any] | None = None,
    method: str | None = None,
    url: str | None = None,
    dpop: str | None = None,
    agent_id: str | None = None,
) -> dict:
    """The request body of one evaluation, as the contract lays it out (docs/toolkit.md)."""
    subject: dict[str, Any] = {"type": "agent", "properties": {"token": token}}
    if dpop:
        subject["properties"]["dpop"] = dpop
    if agent_id:
        subject["id"] = agent_id
    body: dict[str, Any] = {
        "subject": subject,
        "action": {"name": capability},
        "resource": {"type": "tool", "id": tool, "properties": {"parameters": dict(parameters or {})}},
    }
    if method and url:
        body["context"] = {"http": {"method": method.upper(), "url": url}}
    return body


class _Credentials:
    def __init__(self, settings: ToolServerSettings):
        self.settings = settings
        self._key = jwk.JWK(**settings.private_jwk) if settings.private_jwk else None
        if self._key is not None:
            alg = settings.private_jwk.get("alg") or _ALG_FOR_KEY.get(
                (settings.private_jwk.get("kty"), settings.private_jwk.get("crv"))
            )
            if alg is None and settings.private_jwk.get("kty") == "RSA":
                alg = "PS256"
            if alg is None:
                raise ValueError("cannot tell which algorithm the tool server's key signs with")
            self._alg = alg

    def header(self, audience: str) -> dict[str, str]:
        settings = self.settings
        if settings.client_secret:
            pair = f"{quote_plus(settings.client_id)}:{quote_plus(settings.client_secret)}"
            return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
        if self._key is not None:
            return {"Authorization": "Bearer " + self.assertion(audience)}
        return {}

    def assertion(self, audience: str) -> str:
        """An RFC 7523 client assertion, single use (fresh ``jti``), valid for a minute."""
        now = int(time.time())
        claims = {
            "iss": self.settings.client_id,
            "sub": self.settings.client_id,
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": self._alg, "typ": "JWT"}
        if self._key.get("kid"):
            header["kid"] = self._key.get("kid")
        token = jwt.JWT(header=header, claims=claims)
        token.make_signed_token(self._key)
        return token.serialize()


class DecisionClient:
    """Calls ``POST /access/v1/evaluation``; :meth:`evaluate` (sync) and :meth:`aevaluate` (async)."""

    def __init__(
        self,
        settings: ToolServerSettings,
        *,
        http: httpx.Client | None = None,
        async_http: httpx.AsyncClient | None = None,
    ):
        self.settings = settings
        self.endpoint = settings.evaluation_endpoint
        self._credentials = _Credentials(settings)
        timeout = httpx.Timeout(settings.timeout, connect=settings.connect_timeout)
        self._http = http or httpx.Client(timeout=timeout)
        self._async_http = async_http
        self._timeout = timeout

    def close(self) -> None:
        """Close the connections kept open to Gatehouse (the sync client's)."""
        self._http.close()

    async def aclose(self) -> None:
        """Close the connections kept open to Gatehouse (both clients'); call it from the server's loop."""
        self._http.close()
        if self._async_http is not None:
            await self._async_http.aclose()

    def discover(self) -> str:
        """Use the endpoint named by the issuer's ``/.well-known/authzen-configuration`` (its
        ``policy_decision_point`` must be the configured issuer); returns it."""
        answer = self._http.get(self.settings.issuer + "/.well-known/authzen-configuration")
        document = answer.json() if answer.status_code == 200 else {}
        document = document if isinstance(document, dict) else {}
        endpoint = document.get("access_evaluation_endpoint")
        if document.get("policy_decision_point") != self.settings.issuer or not isinstance(endpoint, str):
            raise ValueError("the issuer's AuthZEN configuration does not name its evaluation endpoint")
        self.endpoint = endpoint
        return endpoint

    def _answer(self, response: httpx.Response) -> Decision:
        if response.status_code != 200 or len(response.content) > MAX_ANSWER_BYTES:
            log.warning("decision API answered HTTP %s; denying", response.status_code)
            return Decision.unavailable()
        try:
            return Decision.from_answer(response.json())
        except ValueError:
            log.warning("decision API answered a body that is not JSON; denying")
            return Decision.unavailable()

    def evaluate(self, **request: Any) -> Decision:
        """One decision for :func:`evaluation_request`'s keyword arguments; never raises."""
        body = evaluation_request(**request)
        try:
            response = self._http.post(
                self.endpoint, json=body, headers=self._credentials.header(self.endpoint)
            )
            return self._answer(response)
        except Exception as exc:  # transport errors, timeouts, anything: fail closed
            log.warning("decision API unreachable (%s); denying", type(exc).__name__)
            return Decision.unavailable()

    async def aevaluate(self, **request: Any) -> Decision:
        """The async twin of :meth:`evaluate`.  Its connection pool belongs to the event loop of the first
        call: use one client per loop (a server has one)."""
        if self._async_http is None:
            self._async_http = httpx.AsyncClient(timeout=self._timeout)
        body = evaluation_request(**request)
        try:
            response = await self._async_http.post(
                self.endpoint, json=body, headers=self._credentials.header(self.endpoint)
            )
            return self._answer(response)
        except Exception as exc:  # transport errors, timeouts, anything: fail closed
            log.warning("decision API unreachable (%s); denying", type(exc).__name__)
            return Decision.unavailable()
