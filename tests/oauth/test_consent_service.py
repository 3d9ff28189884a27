"""grant_consent: a user grants an agent capabilities for themselves, within the rules."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from governance.errors import InvalidState, NotPermitted
from governance.models import Grant
from governance.services import agent_suspend, consent_deny, grant_consent
from tests.factories import AgentFactory, CapabilityFactory, GrantFactory, UserFactory


@pytest.fixture
def write(tool_server):
    return CapabilityFactory(tool_server=tool_server, key="records.write_note", description="Write a note")


@pytest.fixture
def risky(tool_server):
    return CapabilityFactory(tool_server=tool_server, key="records.delete", risk_level="high")


@pytest.fixture
def approval(tool_server):
    return CapabilityFactory(
        tool_server=tool_server, key="records.export", requires_approval=True, approvals_required=1
    )


@pytest.fixture
def voice(org, admin, capability, write, risky, approval):
    return AgentFactory(
        organization=org, owner=admin, name="voice", ceiling=[capability, write, risky, approval]
    )


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def test_consent_creates_own_grants_and_records_one_event(voice, member, capability, write):
    result = grant_consent(
        actor=member, agent=voice, capabilities=[capability, write], audience="https://x.test/"
    )
    assert sorted(g.capability.key for g in result.created) == ["records.read_own", "records.write_note"]
    grants = Grant.objects.active().filter(agent=voice, user=member)
    assert grants.count() == 2
    assert all(
        g.granted_by_id == member.pk and g.expires_at > timezone.now() + timedelta(days=29) for g in grants
    )
    [event] = events("consent.given")
    assert (
        event.actor_id == str(member.pk) and event.on_behalf_of_id == member.pk and event.agent_id == voice.pk
    )
    assert event.capabilities == "records.read_own records.write_note"
    assert '"created":["records.read_own","records.write_note"]' in event.parameters
    # one consent, one event: no separate grant.created events
    assert events("grant.created") == []


def test_consent_renews_a_grant_that_expires_sooner_and_never_shortens_one(voice, member, capability, write):
    soon = GrantFactory(
        agent=voice, user=member, capability=capability, expires_at=timezone.now() + timedelta(hours=1)
    )
    forever = GrantFactory(agent=voice, user=member, capability=write, expires_at=None)
    result = grant_consent(actor=member, agent=voice, capabilities=[capability, write])
    assert [g.pk for g in result.renewed] == [soon.pk] and [g.pk for g in result.unchanged] == [forever.pk]
    soon.refresh_from_db()
    forever.refresh_from_db()
    assert soon.expires_at > timezone.now() + timedelta(days=29)
    assert forever.expires_at is None
    assert Grant.objects.filter(agent=voice, user=member).count() == 2


def test_consent_replaces_an_expired_open_grant(voice, member, capability):
    old = GrantFactory(agent=voice, user=member, capability=capability)
    Grant.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    result = grant_consent(actor=member, agent=voice, capabilities=[capability])
    old.refresh_from_db()
    assert old.revoked_at is not None and result.created[0].pk != old.pk


@pytest.mark.parametrize("which", ["risky", "approval"])
def test_consent_cannot_give_what_needs_an_approver(request, voice, member, which):
    capability = request.getfixturevalue(which)
    with pytest.raises(NotPermitted, match="approver"):
        grant_consent(actor=member, agent=voice, capabilities=[capability])
    assert not Grant.objects.filter(agent=voice).exists()
    assert events("consent.given") == []


def test_consent_cannot_go_beyond_the_agents_ceiling(org, admin, member, capability, write):
    narrow = AgentFactory(organization=org, owner=admin, name="narrow", ceiling=[capability])
    with pytest.raises(NotPermitted, match="ceiling"):
        grant_consent(actor=member, agent=narrow, capabilities=[capability, write])
    assert not Grant.objects.filter(agent=narrow).exists()


def test_a_user_of_another_organization_cannot_consent(voice, other_org, capability):
    stranger = UserFactory(organization=other_org, username="stranger")
    with pytest.raises(NotPermitted, match="own organization"):
        grant_consent(actor=stranger, agent=voice, capabilities=[capability])


def test_a_deactivated_user_cannot_consent(voice, member, capability):
    member.is_active = False
    member.save()
    with pytest.raises(NotPermitted):
        grant_consent(actor=member, agent=voice, capabilities=[capability])


def test_a_suspended_agent_gets_no_consent(voice, member, capability, system):
    agent_suspend(actor=system, agent=voice, reason="test")
    with pytest.raises(InvalidState, match="suspended"):
        grant_consent(actor=member, agent=voice, capabilities=[capability])


def test_a_background_agent_gets_no_consent(background_agent, member, capability):
    with pytest.raises(Exception, match="background"):
        grant_consent(actor=member, agent=background_agent, capabilities=[capability])


def test_consent_deny_records_denial_and_changes_nothing(voice, member, capability):
    consent_deny(actor=member, agent=voice, capabilities=["records.read_own"], audience="https://x.test/")
    [event] = events("consent.denied")
    assert event.result == "denied" and event.capabilities == "records.read_own"
    assert not Grant.objects.filter(agent=voice).exists()
