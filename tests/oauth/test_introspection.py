"""Introspection per tool server and revocation, over HTTP against a live server."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance.services import agent_suspend
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)


def issue(http, issuer, world, agent, key, scope="records.read_own"):
    data = {"grant_type": "client_credentials", "scope": scope, "resource": world.records.audience}
    data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
    response = http.post(f"{issuer}/oauth/token/", data=data)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def introspect(http, issuer, tool_server, key, token):
    data = {"token": token}
    data.update(
        helpers.assertion_params(key, tool_server.application.client_id, f"{issuer}/oauth/introspect/")
    )
    return http.post(f"{issuer}/oauth/introspect/", data=data)


@pytest.fixture
def setup(issuer, http, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    records_key = world.tool_server_key(world.records)
    calendar_key = world.tool_server_key(world.calendar)
    return agent, key, records_key, calendar_key


def test_the_audience_sees_an_active_token(issuer, http, world, setup):
    agent, key, records_key, _ = setup
    token = issue(http, issuer, world, agent, key)
    body = introspect(http, issuer, world.records, records_key, token).json()
    assert body["active"] is True
    assert body["aud"] == world.records.audience
    assert body["client_id"] == body["sub"] == agent.application.client_id
    assert body["scope"] == "records.read_own" and body["iss"] == issuer and body["token_type"] == "Bearer"
    assert {"exp", "iat", "jti"} <= set(body)


def test_another_tool_server_learns_nothing(issuer, http, world, setup):
    agent, key, _, calendar_key = setup
    token = issue(http, issuer, world, agent, key)
    assert introspect(http, issuer, world.calendar, calendar_key, token).json() == {"active": False}
    assert AuditEvent.objects.filter(action="token.introspected", result="denied").exists()


def test_agents_and_strangers_cannot_introspect(issuer, http, world, setup):
    agent, key, _, _ = setup
    token = issue(http, issuer, world, agent, key)
    data = {"token": token}
    data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/introspect/"))
    as_agent = http.post(f"{issuer}/oauth/introspect/", data=data)
    assert as_agent.status_code == 401 and as_agent.json()["error"] == "invalid_client"
    anonymous = http.post(f"{issuer}/oauth/introspect/", data={"token": token})
    assert anonymous.status_code == 401


def test_a_suspended_agents_tokens_are_inactive_at_once(issuer, http, world, setup):
    agent, key, records_key, _ = setup
    token = issue(http, issuer, world, agent, key)
    agent_suspend(actor=SYSTEM, agent=agent, reason="kill switch test")
    assert introspect(http, issuer, world.records, records_key, token).json() == {"active": False}


def test_a_suspended_agent_is_inactive_even_if_its_rows_survive(issuer, http, world, setup):
    agent, key, records_key, _ = setup
    token = issue(http, issuer, world, agent, key)
    type(agent).objects.filter(pk=agent.pk).update(status="suspended")  # status only, tokens left in place
    assert introspect(http, issuer, world.records, records_key, token).json() == {"active": False}


def test_a_lapsed_grant_makes_the_token_inactive(issuer, http, world, setup):
    from django.utils import timezone

    from governance.models import Grant

    agent, key, records_key, _ = setup
    token = issue(http, issuer, world, agent, key)
    Grant.objects.filter(agent=agent).update(expires_at=timezone.now())
    assert introspect(http, issuer, world.records, records_key, token).json() == {"active": False}


def test_unknown_and_garbage_tokens_are_inactive(issuer, http, world, setup):
    _, _, records_key, _ = setup
    assert introspect(http, issuer, world.records, records_key, "nope").json() == {"active": False}


def test_revocation_by_the_owner_only(issuer, http, world, setup):
    agent, key, records_key, _ = setup
    other, other_key = world.background_agent()
    token = issue(http, issuer, world, agent, key)

    def revoke(client_agent, client_key, value):
        data = {"token": value, "token_type_hint": "access_token"}
        data.update(
            helpers.assertion_params(
                client_key, client_agent.application.client_id, f"{issuer}/oauth/revoke/"
            )
        )
        return http.post(f"{issuer}/oauth/revoke/", data=data)

    assert revoke(other, other_key, token).status_code == 200  # 200, but nothing happens
    assert introspect(http, issuer, world.records, records_key, token).json()["active"] is True
    assert revoke(agent, key, token).status_code == 200
    assert introspect(http, issuer, world.records, records_key, token).json() == {"active": False}
    assert revoke(agent, key, "unknown-token").status_code == 200
    assert AuditEvent.objects.filter(action="token.revoked").count() == 1
    unauthenticated = http.post(f"{issuer}/oauth/revoke/", data={"token": token})
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"] == "invalid_client"
