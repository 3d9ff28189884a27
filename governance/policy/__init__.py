"""Policy files: organizations, users, tool servers, capabilities, agents and grants as declarative YAML.

See docs/policy-format.md.  ``apply_file`` checks a file whole and applies it in one transaction through
the governance services; ``export_yaml`` writes the current state in the same format.
"""

from governance.policy.apply import Outcome, apply_bytes, apply_file, apply_text
from governance.policy.errors import PolicyRefused, Problem
from governance.policy.export import export_policy, export_yaml

__all__ = [
    "Outcome",
    "PolicyRefused",
    "Problem",
    "apply_bytes",
    "apply_file",
    "apply_text",
    "export_policy",
    "export_yaml",
]
