"""DOT's scopes backend: the scopes are capability keys in the database; nothing is granted by default."""

from __future__ import annotations

from oauth2_provider.scopes import BaseScopes

from governance.models import Capability
from governance.oauth.principals import agent_for


class CapabilityScopes(BaseScopes):
    def get_all_scopes(self) -> dict[str, str]:
        return {
            key: description or key
            for key, description in Capability.objects.values_list("key", "description")
        }

    def get_available_scopes(self, application=None, request=None, *args, **kwargs) -> list[str]:
        agent = agent_for(application)
        if agent is None:
            return []
        return list(agent.ceiling.values_list("key", flat=True))

    def get_default_scopes(self, application=None, request=None, *args, **kwargs) -> list[str]:
        """The agent's configured minimum (often empty), never ``__all__``."""
        agent = agent_for(application)
        return agent.default_scope.split() if agent is not None else []
