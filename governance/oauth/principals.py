"""Who stands behind a DOT application: an agent, a tool server, or nobody."""

from __future__ import annotations

from governance.models import Agent, ToolServer


def principal_for(application) -> Agent | ToolServer | None:
    """The agent or tool server behind a DOT application (None for a bare application or None)."""
    if application is None:
        return None
    for attribute, model in (("agent", Agent), ("tool_server", ToolServer)):
        try:
            return getattr(application, attribute)
        except model.DoesNotExist:
            continue
    return None


def agent_for(application) -> Agent | None:
    """The agent behind a DOT application, or None."""
    principal = principal_for(application)
    return principal if isinstance(principal, Agent) else None
