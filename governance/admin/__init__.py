"""The Django admin for governance: every write goes through governance.services (see base.py)."""

from governance.admin import agents, grants, oauth, organizations, tool_servers  # noqa: F401  (registration)
