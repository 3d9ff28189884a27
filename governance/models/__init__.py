from governance.models.agents import Agent
from governance.models.capabilities import Capability, RiskLevel, ToolServer
from governance.models.grants import Grant
from governance.models.organizations import Organization, Role, User
from governance.models.tokens import (
    InitialAccessToken,
    RefreshTokenAuthentication,
    RefreshTokenBinding,
    SigningKey,
    TokenRecord,
)

__all__ = [
    "Agent",
    "Capability",
    "Grant",
    "InitialAccessToken",
    "Organization",
    "RefreshTokenAuthentication",
    "RefreshTokenBinding",
    "RiskLevel",
    "Role",
    "SigningKey",
    "TokenRecord",
    "ToolServer",
    "User",
]
