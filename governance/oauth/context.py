"""What the broker learnt while handling one OAuth request, for the audit event the view writes at the end.

The oauthlib request object never reaches the Django view, so the validator writes here (a context variable
scoped to the request) and the view reads it to record a refusal with the agent, user and audience.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BrokerTrace:
    endpoint: str
    agent: Any = None
    tool_server: Any = None
    user: Any = None
    audience: str = ""
    capabilities: list[str] = field(default_factory=list)
    reason: str = ""
    client_id: str = ""
    recorded: bool = False  # an event already describes the failure (e.g. elevation.attempted)


_trace: contextvars.ContextVar[BrokerTrace | None] = contextvars.ContextVar(
    "gatehouse_broker_trace", default=None
)


def begin(endpoint: str) -> contextvars.Token:
    return _trace.set(BrokerTrace(endpoint=endpoint))


def end(token: contextvars.Token) -> None:
    _trace.reset(token)


def trace() -> BrokerTrace:
    current = _trace.get()
    if current is None:  # called outside a broker view (e.g. a test driving the validator): a throwaway trace
        current = BrokerTrace(endpoint="")
        _trace.set(current)
    return current


def note(**values) -> None:
    current = trace()
    for name, value in values.items():
        if value not in (None, "", []):
            setattr(current, name, value)
