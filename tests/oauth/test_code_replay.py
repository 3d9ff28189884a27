"""A replayed authorization code (RFC 6749 §4.1.2): refused, and the tokens its first redemption minted are
revoked, over HTTP against a live server."""

from __future__ import annotations

import json

import pytest
from oauth2_provider.models import AccessToken, RefreshToken

from audit.models import AuditEvent
from governance.models import TokenRecord
from tests.oauth.test_code_flow import exchange, get_code, refresh, signed_in  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_replayed_code_revokes_every_token_its_redemption_minted(issuer, signed_in, world):  # noqa: F811
    agent, key = world.interactive_agent()
    query, verifier = get_code(signed_in, issuer, world, agent)
    first = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier)
    assert first.status_code == 200, first.text
    rotated = refresh(signed_in, issuer, agent, key, first.json()["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    assert TokenRecord.objects.count() == 1 and AccessToken.objects.count() == 1

    replay = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # Everything from that code is dead: the rotated refresh token is refused, no access token remains.
    assert not AccessToken.objects.exists() and not TokenRecord.objects.exists()
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    again = refresh(signed_in, issuer, agent, key, rotated.json()["refresh_token"])
    assert again.json()["error"] == "invalid_grant"
    event = AuditEvent.objects.get(action="token.revoked")
    assert json.loads(event.parameters)["reason"] == "authorization code replayed"
    assert event.agent_id == agent.pk and event.on_behalf_of_id == world.member.pk
    assert query["code"] not in str(event.parameters)
    assert first.json()["access_token"] not in str(event.parameters)


def test_a_code_replayed_before_any_refresh_revokes_its_access_token(issuer, signed_in, world):  # noqa: F811
    agent, key = world.interactive_agent()
    query, verifier = get_code(signed_in, issuer, world, agent)
    first = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier).json()
    replay = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier)
    assert replay.json()["error"] == "invalid_grant"
    assert not AccessToken.objects.exists()
    assert refresh(signed_in, issuer, agent, key, first["refresh_token"]).json()["error"] == "invalid_grant"
    # A third presentation finds nothing more to revoke: still refused, no second revocation event.
    exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier)
    assert AuditEvent.objects.filter(action="token.revoked").count() == 1
