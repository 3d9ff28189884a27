"""The approval policy in policy files: applied, refused when out of range, exported and applied again."""

from __future__ import annotations

import pytest

from governance.models import Capability
from governance.policy import PolicyRefused, apply_bytes, export_yaml

POLICY = b"""
version: 1
organizations: [{slug: clinic, name: Clinic}]
users: [{username: dana, role: admin}]
tool_servers:
  - name: Records
    audience: https://records.clinic.example/mcp
    capabilities:
      - key: appointments.cancel
        risk_level: high
        requires_approval: true
        approvals_required: 2
        approver_role: ""
        on_behalf_of_may_approve: true
        exclude_agent_owner: true
        tolerate_denials: true
        approval_expiry_seconds: 900
      - key: records.read_own
"""


def test_a_policy_file_sets_the_approval_policy_and_round_trips(db):
    apply_bytes(POLICY, name="clinic.yaml")
    cancel = Capability.objects.get(key="appointments.cancel")
    assert (
        cancel.approver_role,
        cancel.on_behalf_of_may_approve,
        cancel.exclude_agent_owner,
        cancel.tolerate_denials,
        cancel.approval_expiry_seconds,
    ) == ("", True, True, True, 900)
    read = Capability.objects.get(key="records.read_own")
    assert (read.approver_role, read.tolerate_denials, read.approval_expiry_seconds) == (
        "approver",
        False,
        3600,
    )
    exported = export_yaml().encode()
    assert b"approver_role: ''" in exported and b"tolerate_denials: true" in exported
    assert apply_bytes(exported, name="exported.yaml").changes == []


@pytest.mark.parametrize(
    "line", [b"approval_expiry_seconds: 5", b"approver_role: boss", b"tolerate_denials: 'yes'"]
)
def test_out_of_range_approval_fields_refuse_the_file(db, line):
    bad = POLICY.replace(b"approval_expiry_seconds: 900", line)
    with pytest.raises(PolicyRefused):
        apply_bytes(bad, name="bad.yaml")
    assert not Capability.objects.exists()
