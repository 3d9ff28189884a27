"""Portal writes: each goes through its service, is audited, and is refused where the service refuses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from approvals.models import ActionRequest
from audit.actions import Action
from audit.models import AuditEvent
from governance import services
from governance.errors import NotPermitted
from governance.models import Grant
from tests.factories import AdminFactory, AgentFactory, GrantFactory
from tests.governance.step_up_helpers import pass_step_up
from tests.portal.conftest import client_for


def grant_url(agent) -> str:
    return f"{reverse('portal:grant_new')}?agent={agent.pk}"


def open_grants(agent, user, key):
    return Grant.objects.active().filter(agent=agent, user=user, capability__key=key)


# --- granting ------------------------------------------------------------------------------------------


def test_grant_form_shows_risk_approval_and_step_up(world):
    world["read"].requires_approval, world["read"].approvals_required = True, 2
    world["read"].requires_step_up = True
    world["read"].save()
    body = client_for(world["admin"]).get(grant_url(world["agent"])).content.decode()
    assert "risk high" in body and "risk critical" in body and "risk low" in body
    assert "needs 2 approvers" in body and "step-up on use" in body
    for preset in ("1 hour", "7 days", "90 days", "No expiry"):
        assert preset in body


def test_admin_grants_several_capabilities_at_once(world):
    agent, approver = world["agent"], world["approver"]
    world["read"].risk_level = "medium"
    world["read"].save()
    before = timezone.now()
    response = client_for(world["admin"]).post(
        grant_url(agent),
        {
            "user": approver.pk,
            "capabilities": [world["read"].pk],
            "expiry": "7d",
            "reason": "rota",
        },
        follow=True,
    )
    assert response.status_code == 200
    grant = open_grants(agent, approver, "records.read_own").get()
    assert before + timedelta(days=7) <= grant.expires_at <= timezone.now() + timedelta(days=7)
    assert grant.granted_by == world["admin"] and grant.reason == "rota"
    assert AuditEvent.objects.filter(action=Action.GRANT_CREATED, target_id=str(grant.pk)).count() == 1
    assert b"Granted:" in response.content


def test_a_refused_grant_is_reported_and_the_others_still_happen(world):
    agent, member = world["agent"], world["member"]
    world["cancel"].risk_level = "low"
    world["cancel"].save()
    Grant.objects.filter(capability=world["read"]).update(revoked_at=timezone.now())
    response = client_for(world["admin"]).post(
        grant_url(agent),
        {
            "user": member.pk,
            "capabilities": [world["read"].pk, world["cancel"].pk],
            "expiry": "never",
        },
        follow=True,
    )
    body = response.content.decode()
    assert "appointments.cancel: appointments.cancel is already granted" in body
    assert open_grants(agent, member, "records.read_own").get().expires_at is None


def test_high_risk_grant_needs_a_fresh_second_factor(world):
    agent, approver = world["agent"], world["approver"]
    client = client_for(world["admin"])
    data = {"user": approver.pk, "capabilities": [world["export"].pk], "expiry": "1h"}
    refused = client.post(grant_url(agent), data, HTTP_REFERER="http://testserver" + grant_url(agent))
    assert refused.status_code == 403
    assert b"second factor" in refused.content
    assert not open_grants(agent, approver, "records.export").exists()
    assert AuditEvent.objects.filter(action=Action.STEP_UP_REQUIRED).exists()
    pass_step_up(client, world["admin"])
    AdminFactory(organization=world["org"], username="bert")  # a second admin to approve
    response = client.post(grant_url(agent), data, follow=True)
    assert b"records.export needs a second admin" in response.content
    # Not granted yet: a request waits for another admin (approvals.policy).
    assert not open_grants(agent, approver, "records.export").exists()
    request = ActionRequest.objects.get(kind="grant", capability=world["export"], on_behalf_of=approver)
    assert request.requested_by == world["admin"] and request.status == "pending"


def test_grant_form_refuses_bad_input_without_a_server_error(world):
    client = client_for(world["admin"])
    agent = world["agent"]
    for data in [
        {"user": world["approver"].pk, "capabilities": [world["read"].pk], "expiry": "forever"},
        {"user": world["approver"].pk, "capabilities": [], "expiry": "1d"},
        {"user": world["other_member"].pk, "capabilities": [world["read"].pk], "expiry": "1d"},
        {"user": world["approver"].pk, "capabilities": ["x\x00"], "expiry": "1d"},
        {
            "user": world["approver"].pk,
            "capabilities": [world["read"].pk],
            "expiry": "1d",
            "reason": "a\x00b",
        },
        {
            "user": world["approver"].pk,
            "capabilities": [world["read"].pk],
            "expiry": "1d",
            "reason": "r" * 5000,
        },
    ]:
        response = client.post(grant_url(agent), data)
        assert response.status_code == 200, data
    assert not Grant.objects.filter(user=world["approver"]).exists()
    assert not Grant.objects.filter(user=world["other_member"], agent=agent).exists()


def test_hostile_path_and_query_values_give_no_server_error(world):
    client = client_for(world["admin"])
    for url in [
        f"{reverse('portal:grant_new')}?agent=%00",
        f"{reverse('portal:grant_new')}?agent=1&user=%E2%80%AE",
        f"{reverse('portal:grant_new')}?agent={'9' * 40}",
        "/portal/agents/99999999999999999999999/",
    ]:
        assert client.get(url).status_code < 500, url


# --- revoking ------------------------------------------------------------------------------------------


def test_admin_revokes_with_a_reason(world):
    grant = world["grant"]
    client = client_for(world["admin"])
    assert client.post(reverse("portal:grant_revoke", args=[grant.pk]), {"reason": ""}).status_code == 200
    grant.refresh_from_db()
    assert grant.revoked_at is None
    response = client.post(reverse("portal:grant_revoke", args=[grant.pk]), {"reason": "left the clinic"})
    assert response.status_code == 302
    grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.revoke_reason == "left the clinic"
    assert grant.revoked_by == world["admin"]


# --- the kill switch -----------------------------------------------------------------------------------


def _live_token(agent, user):
    return get_access_token_model().objects.create(
        user=user,
        application=agent.application,
        token="t-" + str(user.pk),
        scope="records.read_own",
        expires=timezone.now() + timedelta(minutes=5),
    )


def test_suspend_asks_for_confirmation_then_kills_every_token(world):
    agent = world["agent"]
    _live_token(agent, world["member"])
    _live_token(agent, world["approver"])
    client = client_for(world["admin"])
    url = reverse("portal:agent_suspend", args=[agent.pk])
    # Taking an agent out of service needs a fresh second factor, as in the admin (issue 9: 12).
    assert client.get(url)["Location"].startswith("/portal/mfa/")
    assert client.post(url, {"reason": "odd calls"}).status_code == 403
    agent.refresh_from_db()
    assert agent.status == "active"
    pass_step_up(client, world["admin"])
    page = client.get(url)
    assert page.status_code == 200 and b"This stops the agent now" in page.content
    agent.refresh_from_db()
    assert agent.status == "active"  # a GET changes nothing
    response = client.post(reverse("portal:agent_suspend", args=[agent.pk]), {"reason": "odd calls"})
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.status == "suspended" and agent.status_reason == "odd calls"
    assert not get_access_token_model().objects.filter(application=agent.application).exists()
    event = AuditEvent.objects.filter(action=Action.AGENT_SUSPENDED).get()
    assert event.parameters_dict["revoked"]["access"] == 2

    again = client.post(reverse("portal:agent_reactivate", args=[agent.pk]), {"reason": "checked"})
    assert again.status_code == 302
    agent.refresh_from_db()
    assert agent.status == "active"


def test_suspend_without_reason_changes_nothing(world):
    agent = world["agent"]
    client = client_for(world["admin"])
    pass_step_up(client, world["admin"])
    response = client.post(reverse("portal:agent_suspend", args=[agent.pk]), {"reason": ""})
    assert response.status_code == 200
    agent.refresh_from_db()
    assert agent.status == "active"


# --- the ceiling ---------------------------------------------------------------------------------------


def test_ceiling_preview_names_removals_and_the_grants_that_block_them(world):
    agent = world["agent"]
    client = client_for(world["admin"])
    response = client.post(
        reverse("portal:agent_ceiling", args=[agent.pk]),
        {
            "capabilities": [world["export"].pk],
            "preview": "1",
        },
    )
    body = response.content.decode()
    assert "Removes:" in body and "records.read_own" in body and "appointments.cancel" in body
    assert "Open grants still use" in body
    assert agent.ceiling.count() == 3  # a preview writes nothing
    saved = client.post(
        reverse("portal:agent_ceiling", args=[agent.pk]),
        {
            "capabilities": [world["export"].pk],
            "save": "1",
        },
    )
    assert saved.status_code == 200 and b"Revoke the open grants" in saved.content
    assert agent.ceiling.count() == 3


def test_ceiling_save_goes_through_the_service(world):
    agent = world["agent"]
    response = client_for(world["admin"]).post(
        reverse("portal:agent_ceiling", args=[agent.pk]),
        {
            "capabilities": [world["read"].pk, world["cancel"].pk],
            "save": "1",
        },
    )
    assert response.status_code == 302
    assert set(agent.ceiling.values_list("key", flat=True)) == {"records.read_own", "appointments.cancel"}
    event = AuditEvent.objects.filter(action=Action.AGENT_CEILING_CHANGED).get()
    assert event.parameters_dict["removed"] == ["records.export"]


def test_ceiling_cannot_take_a_foreign_capability(world):
    agent = world["agent"]
    foreign = world["other_grant"].capability
    response = client_for(world["admin"]).post(
        reverse("portal:agent_ceiling", args=[agent.pk]),
        {
            "capabilities": [world["read"].pk, world["cancel"].pk, world["export"].pk, foreign.pk],
            "save": "1",
        },
    )
    assert response.status_code == 200
    assert not agent.ceiling.filter(pk=foreign.pk).exists()


# --- my page -------------------------------------------------------------------------------------------


def test_my_page_lists_my_agents_grants_and_activity(world):
    body = client_for(world["member"]).get(reverse("governance:home")).content.decode()
    assert "records.read_own" in body and "Read your own records" in body
    assert "decision.denied" in body and "elevation.attempted" in body
    other = client_for(world["approver"]).get(reverse("governance:home")).content.decode()
    assert "No agent holds a grant for you." in other and "records.read_own" not in other


def test_i_revoke_one_of_my_grants(world):
    grant = world["grant"]
    response = client_for(world["member"]).post(reverse("portal:my_grant_revoke", args=[grant.pk]))
    assert response.status_code == 302
    grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.revoked_by == world["member"]
    assert grant.revoke_reason == "withdrawn by the user"


def test_i_revoke_an_agent_entirely(world):
    agent, member = world["agent"], world["member"]
    client = client_for(member)
    assert client.get(reverse("portal:my_agent_revoke", args=[agent.pk])).status_code == 200
    response = client.post(reverse("portal:my_agent_revoke", args=[agent.pk]), {"reason": "no longer"})
    assert response.status_code == 302
    assert not Grant.objects.active().filter(agent=agent, user=member).exists()
    assert AuditEvent.objects.filter(action=Action.GRANT_REVOKED).count() == 2


def test_i_cannot_revoke_someone_elses_grant(world):
    grant = world["grant"]
    for who in ("approver", "auditor", "other_member"):
        client = client_for(world[who])
        assert client.post(reverse("portal:my_grant_revoke", args=[grant.pk])).status_code == 404
        assert client.post(reverse("portal:my_agent_revoke", args=[world["agent"].pk])).status_code == 404
    grant.refresh_from_db()
    assert grant.revoked_at is None


# --- the service rule behind "my page" -------------------------------------------------------------------


def test_the_named_user_may_revoke_their_grant(world):
    grant = services.grant_revoke(actor=world["member"], grant=world["grant"], reason="mine")
    assert grant.revoked_at is not None


@pytest.mark.parametrize("who", ["approver", "auditor", "other_member", "other_admin"])
def test_nobody_else_but_an_admin_may_revoke_it(world, who):
    with pytest.raises(NotPermitted):
        services.grant_revoke(actor=world[who], grant=world["grant"], reason="not mine")
    world["grant"].refresh_from_db()
    assert world["grant"].revoked_at is None


def test_a_deactivated_user_may_not_revoke_even_their_own(world):
    member = world["member"]
    member.is_active = False
    member.save()
    with pytest.raises(NotPermitted):
        services.grant_revoke(actor=member, grant=world["grant"], reason="mine")


def test_a_forged_copy_naming_me_does_not_help(world):
    """The stored row decides: an object whose user_id was changed in memory is checked against the table."""
    forged = Grant.objects.get(pk=world["grant"].pk)
    forged.user_id = world["approver"].pk
    with pytest.raises(NotPermitted):
        services.grant_revoke(actor=world["approver"], grant=forged, reason="forged")


def test_nobody_revokes_a_background_agents_grant_as_its_user(world):
    background = AgentFactory(
        organization=world["org"], owner=world["admin"], kind="background", ceiling=[world["read"]]
    )
    grant = GrantFactory(agent=background, capability=world["read"], user=None)
    with pytest.raises(NotPermitted):
        services.grant_revoke(actor=world["member"], grant=grant, reason="service")
