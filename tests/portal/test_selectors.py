"""The portal's reads: dashboard figures, blast radius, live tokens, the approvals seam; per organization."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from approvals.services import grant_request_create
from audit import services as audit
from audit.actions import Action, Result
from governance.models import TokenRecord
from governance.portal import charts
from governance.portal import selectors as portal
from tests.factories import AdminFactory, GrantFactory
from tests.portal.conftest import client_for


def test_alerts_are_denials_and_elevation_attempts_of_my_organization_only(world):
    with transaction.atomic():
        audit.record(
            action=Action.DECISION_DENIED,
            result=Result.DENIED,
            actor=world["other_agent"],
            agent=world["other_agent"],
            organization=world["other_agent"].organization,
        )
    actions = [e.action for e in portal.alerts_for(world["admin"])]
    assert sorted(actions) == ["decision.denied", "elevation.attempted"]
    assert all(e.organization_id == world["org"].pk for e in portal.alerts_for(world["admin"]))
    assert len(portal.alerts_for(world["other_admin"])) == 1


def test_decisions_by_day_counts_today_and_fills_the_week(world):
    series = portal.decisions_by_day(world["admin"])
    assert len(series) == 7 and series[-1].day == timezone.now().date()
    assert (series[-1].decisions, series[-1].denials) == (2, 2)
    assert all((d.decisions, d.denials) == (0, 0) for d in series[:-1])
    assert portal.decisions_by_day(world["other_admin"])[-1].decisions == 0


def test_chart_bars_scale_to_the_largest_day(world):
    chart = charts.decisions_chart(portal.decisions_by_day(world["admin"]))
    today = chart.columns[-1]
    assert today.decisions.value == 2 and today.decisions.height > 0
    assert chart.columns[0].decisions.height == 0
    assert chart.ticks[-1].value >= 2
    assert (chart.total_decisions, chart.total_denials) == (2, 2)


def test_dashboard_shows_alerts_expiring_grants_and_agents(world):
    body = client_for(world["admin"]).get(reverse("portal:dashboard")).content.decode()
    assert "possible prompt injection" in body
    assert "row--alert" in body
    assert "Grants about to expire" in body and "records.read_own" in body
    assert '<svg class="chart"' in body
    assert "Nothing waits for you." in body


def test_pending_approvals_are_the_viewers_inbox(world):
    second = AdminFactory(organization=world["org"], username="bert")
    grant_request_create(
        actor=second, agent=world["agent"], capability=world["export"], user=world["approver"]
    )
    body = client_for(world["admin"]).get(reverse("portal:dashboard")).content.decode()
    assert "records.export</code></a> (grant)" in body and "for arno" in body
    assert 'aria-label="1 waiting"' in body  # the inbox entry in the navigation, with its count
    mine = client_for(second).get(reverse("portal:dashboard")).content.decode()
    assert "Nothing waits for you." in mine  # nobody approves their own request
    assert portal.pending_approvals(world["other_admin"]) == []


def test_blast_radius_is_the_union_over_users_highest_risk_first(world):
    GrantFactory(agent=world["agent"], capability=world["read"], user=world["approver"])
    GrantFactory(
        agent=world["agent"],
        capability=world["export"],
        user=world["approver"],
        expires_at=timezone.now() - timedelta(minutes=1),
    )  # expired: not held
    radius = portal.blast_radius(world["admin"], world["agent"])
    assert [e.capability.key for e in radius] == ["appointments.cancel", "records.read_own"]
    assert sorted(radius[1].users) == ["arno", "pat"]
    assert portal.blast_radius(world["other_admin"], world["agent"]) == []


def test_live_tokens_are_those_still_working_and_never_show_values(world):
    agent, member = world["agent"], world["member"]
    model = get_access_token_model()
    now = timezone.now()
    for n, expires in enumerate([now + timedelta(minutes=5), now - timedelta(minutes=1)]):
        token = model.objects.create(
            user=member,
            application=agent.application,
            token=f"secret-value-{n}",
            scope="records.read_own",
            expires=expires,
        )
        TokenRecord.objects.create(
            access_token=token,
            jti=f"jti-{n}",
            audience=world["server"].audience,
            tool_server=world["server"],
            agent=agent,
            user=member,
            subject=str(member.pk),
            client_id=agent.application.client_id,
            capabilities="records.read_own",
            grant_type="authorization_code",
            issued_at=now,
            expires_at=expires,
        )
    assert [t.jti for t in portal.live_tokens(world["admin"], agent)] == ["jti-0"]
    assert portal.live_tokens(world["other_admin"], agent) == []
    body = client_for(world["admin"]).get(reverse("portal:agent", args=[agent.pk])).content.decode()
    assert "jti-0" in body and "secret-value" not in body


def test_my_activity_is_only_what_agents_did_for_me(world):
    mine = portal.activity_on_behalf_of(world["member"])
    assert {e.on_behalf_of_id for e in mine} == {world["member"].pk}
    assert portal.activity_on_behalf_of(world["approver"]) == []


def test_agents_by_status_counts_every_status(world):
    counts = portal.agents_by_status(world["admin"])
    assert counts == {"pending": 0, "active": 1, "suspended": 0, "retired": 0}
