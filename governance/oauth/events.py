"""Audit events of the token broker.  Values are identifiers and capability keys, never a token or secret."""

from __future__ import annotations

import logging

from django.db import transaction

from audit import services as audit
from audit.actions import Action, Result

log = logging.getLogger(__name__)


def record_refusal(
    *,
    action: Action,
    error: str,
    agent=None,
    tool_server=None,
    user=None,
    audience: str = "",
    capabilities=(),
    parameters: dict | None = None,
) -> None:
    """Record a refused request in its own transaction: the request fails, the event stays."""
    params = {"error": error, **(parameters or {})}
    if audience:
        params["audience"] = audience
    actor = agent or tool_server
    try:
        with transaction.atomic():
            audit.record(
                action=action,
                actor=actor,
                result=Result.DENIED,
                agent=agent,
                on_behalf_of=user,
                organization=getattr(actor, "organization_id", None),
                capabilities=capabilities,
                parameters=params,
            )
    except Exception:  # fail closed: no silent refusal; the view answers server_error
        log.exception("could not record a token refusal")
        raise
