"""An issuance the broker decided: who, for whom, on which audience, what, until when, bound to which key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from audit.actions import Action
from governance.models import Agent, ToolServer, User
from governance.oauth.scoping import ScopeDecision


@dataclass
class Issued:
    agent: Agent
    user: User | None
    tool_server: ToolServer
    decision: ScopeDecision
    jti: str
    issued_at: datetime
    expires_at: datetime
    grant_type: str
    act: dict | None = None  # RFC 8693 actor chain (token exchange)
    cnf_jkt: str = ""  # RFC 9449 key binding
    acr: str = ""  # the person's authentication level and time (step-up), carried from the code
    auth_time: datetime | None = None
    action: Action | None = None  # audit action; default token.issued / token.refreshed
    audit_parameters: dict = field(default_factory=dict)  # added to the issue event
    authorization_details: list | None = None  # RFC 9396: the exact approved call (CIBA)

    @classmethod
    def starting(cls, *, now: datetime, lifetime: int, **fields) -> Issued:
        """An issuance from ``now`` for ``lifetime`` seconds, under a fresh ``jti``."""
        expires_at = now + timedelta(seconds=lifetime)
        return cls(jti=uuid.uuid4().hex, issued_at=now, expires_at=expires_at, **fields)

    @property
    def subject(self) -> str:
        return str(self.user.pk) if self.user is not None else self.agent.application.client_id
