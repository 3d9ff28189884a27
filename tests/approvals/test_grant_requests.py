"""Granting a high- or critical-risk capability by hand needs a second admin; policy files do not."""

from __future__ import annotations

import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from approvals import services
from approvals.models import ActionRequest, RequestStatus
from audit.actions import Action
from audit.models import AuditEvent
from audit.services import SYSTEM
from governance import services as governance
from governance.errors import Conflict, NotPermitted
from governance.models import Grant
from tests.factories import CapabilityFactory, UserFactory
from tests.governance.step_up_helpers import pass_step_up


@pytest.fixture
def risky(clinic):
    capability = CapabilityFactory(
        tool_server=clinic.cancel.tool_server, key="records.erase", risk_level="critical"
    )
    clinic.agent.ceiling.add(capability)
    return capability


def test_the_requesting_admin_and_the_beneficiary_never_approve(clinic, risky):
    clinic.pat.role = "admin"
    clinic.pat.save()
    request = services.grant_request_create(
        actor=clinic.admin, agent=clinic.agent, capability=risky, user=clinic.pat, reason="erasure request"
    )
    assert set(request.approvers.all()) == {clinic.admin2}
    for person in (clinic.admin, clinic.pat, clinic.ravi):
        with pytest.raises(NotPermitted):
            services.action_request_approve(actor=person, action_request=request)
    assert not Grant.objects.filter(capability=risky).exists()


def test_a_lone_admin_cannot_propose_a_grant_nobody_can_approve(clinic, risky):
    clinic.admin2.is_active = False
    clinic.admin2.save()
    with pytest.raises(Exception, match="Too few people"):
        services.grant_request_create(
            actor=clinic.admin, agent=clinic.agent, capability=risky, user=clinic.pat
        )


def test_the_same_grant_cannot_wait_twice(clinic, risky):
    services.grant_request_create(actor=clinic.admin, agent=clinic.agent, capability=risky, user=clinic.pat)
    with pytest.raises(Conflict):
        services.grant_request_create(
            actor=clinic.admin2, agent=clinic.agent, capability=risky, user=clinic.pat
        )


def test_a_denied_grant_never_exists(clinic, risky):
    request = services.grant_request_create(
        actor=clinic.admin, agent=clinic.agent, capability=risky, user=clinic.pat
    )
    services.action_request_deny(actor=clinic.admin2, action_request=request, reason="no")
    assert not Grant.objects.filter(capability=risky).exists()


def test_a_second_admins_approval_creates_the_grant_through_grant_create(clinic, risky):
    request = services.grant_request_create(
        actor=clinic.admin, agent=clinic.agent, capability=risky, user=clinic.pat, reason="erasure request"
    )
    assert not Grant.objects.filter(capability=risky).exists()
    approved = services.action_request_approve(actor=clinic.admin2, action_request=request)
    assert approved.status == RequestStatus.APPROVED
    grant = Grant.objects.get(capability=risky, user=clinic.pat)
    assert approved.grant == grant and grant.granted_by == clinic.admin
    assert "approved by admin2" in grant.reason
    assert AuditEvent.objects.filter(action=Action.GRANT_CREATED, target_id=str(grant.pk)).count() == 1


def test_the_system_actor_applying_a_policy_file_grants_directly(clinic, risky):
    other = UserFactory(organization=clinic.org)
    grant = governance.grant_create(actor=SYSTEM, agent=clinic.agent, capability=risky, user=other)
    assert grant.pk and not ActionRequest.objects.filter(kind="grant").exists()


def test_the_admin_form_sends_a_high_risk_grant_for_approval(clinic, risky):
    client = Client()
    client.force_login(clinic.admin)
    TOTPDevice.objects.create(user=clinic.admin, name="Phone", confirmed=True)
    pass_step_up(client, clinic.admin)
    response = client.post(
        "/admin/governance/grant/add/",
        {"agent": clinic.agent.pk, "user": clinic.pat.pk, "capability": risky.pk, "reason": "erasure"},
    )
    request = ActionRequest.objects.get(kind="grant")
    assert (
        response.status_code == 302
        and response["Location"] == f"/admin/approvals/actionrequest/{request.pk}/change/"
    )
    assert not Grant.objects.filter(capability=risky).exists()
    assert client.get(response["Location"]).status_code == 200

    second = Client()
    second.force_login(clinic.admin2)
    TOTPDevice.objects.create(user=clinic.admin2, name="Phone", confirmed=True)
    pass_step_up(second, clinic.admin2)
    assert second.post(f"/portal/approvals/{request.public_id}/", {"decision": "approve"}).status_code == 302
    assert Grant.objects.filter(capability=risky, user=clinic.pat).exists()
