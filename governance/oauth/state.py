"""The state of one OAuth request while the broker handles it: one typed object per request.

The HTTP edge opens it (:func:`begin`) and closes it (:func:`end`); between the two, the adapters to
django-oauth-toolkit and the rules read and fill it through :func:`current`.  oauthlib builds its own
request object from Django's and never hands it back to the view, so the state lives in a context variable
scoped to the request rather than as attributes on either request object.  At the end the edge records the
request's refusal, if any, from :attr:`BrokerRequest.refusal` (exactly once).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from governance.models import Agent, ToolServer, User
from governance.oauth.dpop import DPoPError, DPoPProof
from governance.oauth.issued import Issued
from governance.oauth.refusals import RefusalEvent


@dataclass
class BrokerRequest:
    endpoint: str
    # Who asks, for whom, for what (filled as they become known; the refusal's audit event names them).
    client_id: str = ""
    agent: Agent | None = None
    tool_server: ToolServer | None = None
    user: User | None = None
    audience: str = ""
    capabilities: list[str] = field(default_factory=list)
    # Why the request was refused, for the audit only (never sent to the client).
    reason: str = ""
    # The issuance decided for a token request (read when the token is signed, stored and audited).
    issued: Issued | None = None
    # The resources an authorization code was issued for (RFC 8707), read at the token endpoint.
    code_resource: list[str] = field(default_factory=list)
    # Token exchange: how the actor is allowed to act for the subject ("may_act" or "grant").
    permission: str = ""
    # The request's DPoP proof once verified (a request's proof is verified at most once), or its error.
    proof: DPoPProof | DPoPError | None = None
    proof_checked: bool = False
    # The one event describing this request's refusal, when it is more than a plain token.refused.
    refusal: RefusalEvent | None = None

    def refuse(self, event: RefusalEvent, *, reason: str = "") -> None:
        """Name the event that describes this request's refusal; the first one named stands."""
        if self.refusal is None:
            self.refusal = event
        if reason:
            self.reason = reason

    def about(self, *, agent: Any = None, tool_server: Any = None, client_id: str = "") -> None:
        """Remember the authenticated (or claimed) client."""
        if agent is not None:
            self.agent = agent
        if tool_server is not None:
            self.tool_server = tool_server
        if client_id:
            self.client_id = client_id


_current: contextvars.ContextVar[BrokerRequest | None] = contextvars.ContextVar(
    "gatehouse_broker_request", default=None
)


def begin(endpoint: str) -> contextvars.Token:
    return _current.set(BrokerRequest(endpoint=endpoint))


def end(token: contextvars.Token) -> None:
    _current.reset(token)


def current() -> BrokerRequest:
    """This request's state (outside an endpoint, e.g. a test driving the validator: a fresh one)."""
    state = _current.get()
    if state is None:
        state = BrokerRequest(endpoint="")
        _current.set(state)
    return state
