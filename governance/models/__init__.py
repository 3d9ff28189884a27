from governance.models.agents import Agent
from governance.models.capabilities import Capability, RiskLevel, ToolServer
from governance.models.grants import Grant
from governance.models.organizations import Organization, Role, User

__all__ = ["Agent", "Capability", "Grant", "Organization", "RiskLevel", "Role", "ToolServer", "User"]
