"""The decision pipeline: token ▸ scope ▸ user ▸ rate, one audit event per decision, closed on failure.

:func:`decide` runs the checks of :mod:`governance.enforcement.checks` in order; the first that refuses
names the decision's ``check`` and ``reason``.  Every decision, allowed or denied, is exactly one audit
event (``decision.allowed`` / ``decision.denied``, actor the calling tool server) whose ``decision_id`` the
answer carries.  A store that does not answer (Redis, the database) denies with ``unavailable``; an allowed
decision whose event cannot be written is denied too (logged, since the audit log is what failed).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from audit import services as audit
from audit.actions import Action, Result
from governance.enforcement import checks
from governance.enforcement.checks import Call, Holder
from governance.enforcement.reasons import Denial
from governance.models import ToolServer

log = logging.getLogger(__name__)


@dataclass
class Decision:
    allowed: bool
    decision_id: str
    denial: Denial | None = None

    def answer(self) -> dict[str, Any]:
        """The AuthZEN answer: ``{"decision": bool, "context": {...}}``."""
        context: dict[str, Any] = {"decision_id": self.decision_id}
        if self.denial is not None:
            context.update(reason=self.denial.reason, check=self.denial.check, message=self.denial.message)
            context.update(self.denial.answer)
        return {"decision": self.allowed, "context": context}


@dataclass
class TokenMemo:
    """Token checks already made in one request: a batch presents one token and one DPoP proof for many
    evaluations, and the proof's ``jti`` may be used once."""

    results: dict[tuple, Holder | Denial | checks.Unavailable] = field(default_factory=dict)

    def check(self, call: Call, tool_server: ToolServer) -> Holder:
        key = (call.token, call.dpop, call.http_method, call.http_url, call.agent_id)
        if key not in self.results:
            try:
                self.results[key] = checks.check_token(call, tool_server)
            except (Denial, checks.Unavailable) as exc:
                self.results[key] = exc
        result = self.results[key]
        if isinstance(result, Exception):
            raise result
        return result


def decide(call: Call, tool_server: ToolServer, *, memo: TokenMemo | None = None) -> Decision:
    """Decide on one call for ``tool_server`` and record the decision."""
    decision_id = uuid.uuid4().hex
    holder: Holder | None = None
    denial: Denial | None = None
    try:
        holder = (memo or TokenMemo()).check(call, tool_server)
        checks.check_scope(call, holder)
        permitted = checks.check_user(call, holder, tool_server)
        checks.check_rate(holder, permitted.capability)
        checks.use_approval(holder, permitted)
    except Denial as refused:
        denial = refused
    except checks.Unavailable as exc:
        denial = Denial("unavailable", detail={"store": str(exc)})
    except DatabaseError as exc:
        log.warning("decision %s: the database did not answer (%s)", decision_id, type(exc).__name__)
        denial = Denial("unavailable", detail={"store": "database"})
    try:
        _record(decision_id, call, tool_server, holder, denial)
    except DatabaseError as exc:
        log.error(
            "decision %s (%s) could not be audited (%s); denied as unavailable",
            decision_id,
            denial.reason if denial else "allowed",
            type(exc).__name__,
        )
        denial = Denial("unavailable", detail={"store": "audit"})
    return Decision(allowed=denial is None, decision_id=decision_id, denial=denial)


def _record(
    decision_id: str, call: Call, tool_server: ToolServer, holder: Holder | None, denial: Denial | None
) -> None:
    parameters: dict[str, Any] = {
        "decision_id": decision_id,
        "tool": call.tool,
        "parameters": call.parameters,
    }
    if holder is not None:
        parameters["jti"] = holder.record.jti
    if denial is not None:
        parameters.update(check=denial.check, reason=denial.reason, **denial.detail)
    audit.record(
        action=Action.DECISION_DENIED if denial else Action.DECISION_ALLOWED,
        actor=tool_server,
        result=Result.DENIED if denial else Result.SUCCESS,
        organization=tool_server.organization_id,
        agent=holder.agent if holder else None,
        on_behalf_of=holder.user if holder else None,
        capabilities=[call.capability_key],
        parameters=parameters,
    )


def decide_all(calls: list[Call], tool_server: ToolServer, *, semantic: str) -> list[Decision]:
    """A batch: every call (``execute_all``), or up to the first deny / permit."""
    memo = TokenMemo()
    decisions = []
    for call in calls:
        decision = decide(call, tool_server, memo=memo)
        decisions.append(decision)
        if semantic == "deny_on_first_deny" and not decision.allowed:
            break
        if semantic == "permit_on_first_permit" and decision.allowed:
            break
    return decisions
