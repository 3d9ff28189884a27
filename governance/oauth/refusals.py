"""Refusals of the token broker: what the client is told, and the one audit event that describes it.

A rule refuses by raising :class:`Refusal`: an RFC 6749 error code and a fixed description (never request
data), the HTTP status, extra members or headers the answer needs (``acr_values``, ``DPoP-Nonce``), a
``reason`` for the audit only, and optionally the :class:`RefusalEvent` that describes it when it is more
than a plain ``token.refused`` (an elevation attempt, a refused DPoP proof, a step-up).  The HTTP edge
records the request's refusal exactly once, at the end (:func:`governance.oauth.endpoint.oauth_endpoint`).
Values are identifiers and capability keys, never a token or a secret.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from audit import context
from audit import services as audit
from audit.actions import Action, ActorType, Result
from audit.services import Actor

log = logging.getLogger(__name__)


@dataclass
class RefusalEvent:
    """The audit event of a refused request (result ``denied``); ``error`` is the OAuth error code."""

    action: Action
    error: str
    agent: Any = None
    tool_server: Any = None
    user: Any = None
    audience: str = ""
    capabilities: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)


class Refusal(Exception):
    """An OAuth error decided by the broker; ``description`` is fixed text, never request data."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        reason: str = "",
        status: int = 400,
        event: RefusalEvent | None = None,
        members: dict | None = None,
        headers: dict | None = None,
        **details,
    ):
        super().__init__(description)
        self.error = error
        self.description = description
        self.reason = reason or description
        self.status = status
        self.event = event
        self.members = members or {}  # extra members of the JSON answer (e.g. RFC 9470 acr_values)
        self.headers = headers or {}
        self.details = details


# Parameters the caller chooses freely (an invented client_id: any 255 characters, HTML included): stored
# bounded, and with anything but the characters of a real client id or grant type replaced.
CALLER_CHOSEN = ("client_id", "grant_type")
MAX_CALLER_CHOSEN = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._~:-]")


def caller_chosen(value: str) -> str:
    """A caller-chosen identifier as the audit stores it: at most 100 characters, unsafe ones as ``?``."""
    return _UNSAFE.sub("?", value[:MAX_CALLER_CHOSEN])


def anonymous() -> Actor:
    """The actor of a refusal no client authentication backs: anonymous, at the request's address."""
    address = context.current().client_ip or "unknown address"
    return Actor(type=ActorType.ANONYMOUS, label=f"anonymous ({address})")


def record(event: RefusalEvent) -> None:
    """Record a refused request in its own transaction: the request fails, the event stays."""
    params = {"error": event.error, **event.parameters}
    for name in CALLER_CHOSEN:
        if isinstance(params.get(name), str):
            params[name] = caller_chosen(params[name])
    if event.audience:
        params["audience"] = event.audience
    actor = event.agent or event.tool_server or anonymous()
    with transaction.atomic():
        audit.record(
            action=event.action,
            actor=actor,
            result=Result.DENIED,
            agent=event.agent,
            on_behalf_of=event.user,
            organization=getattr(actor, "organization_id", None),
            capabilities=event.capabilities,
            parameters=params,
        )
