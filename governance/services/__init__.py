"""State changes.  Each is one function, one transaction, one audit event (see docs/architecture.md)."""

from governance.services.agents import (
    agent_activate,
    agent_create,
    agent_reactivate,
    agent_retire,
    agent_set_ceiling,
    agent_suspend,
    agent_update,
)
from governance.services.consent import authorization_refuse, consent_deny, grant_consent
from governance.services.grants import grant_create, grant_renew, grant_revoke
from governance.services.initial_access_tokens import initial_access_token_create
from governance.services.mfa import (
    mfa_device_confirm,
    mfa_device_enrol,
    mfa_device_remove,
    mfa_device_verify,
    step_up_require,
)
from governance.services.organizations import (
    demo_admin_ensure,
    organization_create,
    organization_update,
    user_create,
    user_deactivate,
    user_update,
)
from governance.services.tool_servers import (
    capability_create,
    capability_update,
    tool_server_create,
    tool_server_issue_secret,
    tool_server_set_credentials,
    tool_server_update,
)

__all__ = [
    "agent_activate",
    "agent_create",
    "agent_reactivate",
    "agent_retire",
    "agent_set_ceiling",
    "agent_suspend",
    "agent_update",
    "authorization_refuse",
    "capability_create",
    "capability_update",
    "consent_deny",
    "demo_admin_ensure",
    "grant_consent",
    "grant_create",
    "grant_renew",
    "grant_revoke",
    "initial_access_token_create",
    "mfa_device_confirm",
    "mfa_device_enrol",
    "mfa_device_remove",
    "mfa_device_verify",
    "organization_create",
    "organization_update",
    "step_up_require",
    "tool_server_create",
    "tool_server_issue_secret",
    "tool_server_set_credentials",
    "tool_server_update",
    "user_create",
    "user_deactivate",
    "user_update",
]
