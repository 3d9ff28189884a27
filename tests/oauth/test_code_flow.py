"""Authorization code + PKCE, refresh rotation and reuse detection, over HTTP against a live server."""

from __future__ import annotations

import json

import pytest
from oauth2_provider.models import RefreshToken

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance.models import Grant, TokenRecord
from governance.services import grant_revoke
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)


def exchange(http, issuer, agent, key, *, code, verifier, redirect_uri=helpers.REDIRECT_URI, resource=None):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    if resource:
        data["resource"] = resource
    data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
    return http.post(f"{issuer}/oauth/token/", data=data)


def refresh(http, issuer, agent, key, refresh_token):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
    return http.post(f"{issuer}/oauth/token/", data=data)


@pytest.fixture
def signed_in(http, world):
    helpers.login(http, world.member)
    return http


def get_code(http, issuer, world, agent, *, scope="records.read_own", method="S256"):
    verifier, challenge = helpers.pkce_pair()
    answer = helpers.authorize(
        http,
        issuer,
        client_id=agent.application.client_id,
        scope=scope,
        resource=world.records.audience,
        challenge=challenge,
        method=method,
    )
    return helpers.code_from(answer), verifier


def test_code_pkce_exchange_issues_a_user_token(issuer, signed_in, world):
    agent, key = world.interactive_agent()
    query, verifier = get_code(signed_in, issuer, world, agent)
    assert query["iss"] == issuer and query["state"] == "xyz"
    response = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "records.read_own" and body["refresh_token"]
    record = TokenRecord.objects.get()
    assert record.user == world.member and record.subject == str(world.member.pk)
    assert record.audience == world.records.audience


def test_wrong_verifier_reused_code_and_wrong_redirect_are_refused(issuer, signed_in, world):
    agent, key = world.interactive_agent(
        redirect_uris=(helpers.REDIRECT_URI, "https://agent.example.test/cb")
    )
    query, verifier = get_code(signed_in, issuer, world, agent)
    wrong = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=helpers.pkce_pair()[0])
    assert wrong.json()["error"] == "invalid_grant"
    mismatched = exchange(
        signed_in,
        issuer,
        agent,
        key,
        code=query["code"],
        verifier=verifier,
        redirect_uri="https://agent.example.test/cb",
    )
    assert mismatched.json()["error"] in ("invalid_request", "invalid_grant")
    good = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier)
    assert good.status_code == 200, good.text
    reused = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier)
    assert reused.json()["error"] == "invalid_grant"
    assert AuditEvent.objects.filter(action="token.refused").count() == 3


def test_plain_pkce_and_missing_pkce_are_refused(issuer, signed_in, world):
    agent, _ = world.interactive_agent()
    verifier, _ = helpers.pkce_pair()
    plain = helpers.authorize(
        signed_in,
        issuer,
        client_id=agent.application.client_id,
        scope="records.read_own",
        resource=world.records.audience,
        challenge=verifier,
        method="plain",
    )
    assert helpers.code_from(plain)["error"] == "invalid_request"


def test_unregistered_redirect_uri_is_never_redirected_to(issuer, signed_in, world):
    agent, _ = world.interactive_agent()
    _, challenge = helpers.pkce_pair()
    answer = helpers.authorize(
        signed_in,
        issuer,
        client_id=agent.application.client_id,
        scope="records.read_own",
        resource=world.records.audience,
        challenge=challenge,
        redirect_uri="https://evil.example.test/cb",
    )
    assert answer.status_code != 302 or "evil.example.test" not in answer.headers.get("location", "")


def test_loopback_redirect_may_use_any_port(issuer, signed_in, world):
    agent, key = world.interactive_agent(redirect_uris=("http://127.0.0.1/callback",))
    verifier, challenge = helpers.pkce_pair()
    answer = helpers.authorize(
        signed_in,
        issuer,
        client_id=agent.application.client_id,
        scope="records.read_own",
        resource=world.records.audience,
        challenge=challenge,
        redirect_uri="http://127.0.0.1:51234/callback",
    )
    query = helpers.code_from(answer)
    assert "code" in query
    response = exchange(
        signed_in,
        issuer,
        agent,
        key,
        code=query["code"],
        verifier=verifier,
        redirect_uri="http://127.0.0.1:51234/callback",
    )
    assert response.status_code == 200, response.text


def test_refresh_rotates_and_a_replayed_refresh_token_revokes_the_family(issuer, signed_in, world):
    agent, key = world.interactive_agent()
    query, verifier = get_code(signed_in, issuer, world, agent)
    first = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier).json()
    second = refresh(signed_in, issuer, agent, key, first["refresh_token"])
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert AuditEvent.objects.filter(action="token.refreshed").count() == 1

    replay = refresh(signed_in, issuer, agent, key, first["refresh_token"])
    assert replay.json()["error"] == "invalid_grant"
    reuse = AuditEvent.objects.get(action="token.reuse_detected")
    assert reuse.agent_id == agent.pk and reuse.on_behalf_of_id == world.member.pk
    # The whole family is dead: the rotated refresh token too, and its access token.
    assert refresh(signed_in, issuer, agent, key, second["refresh_token"]).json()["error"] == "invalid_grant"
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    assert not TokenRecord.objects.exists()


def test_refresh_fails_once_the_grant_is_revoked(issuer, signed_in, world):
    agent, key = world.interactive_agent()
    query, verifier = get_code(signed_in, issuer, world, agent)
    first = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier).json()
    grant = Grant.objects.get(agent=agent, user=world.member, capability=world.read)
    grant_revoke(actor=SYSTEM, grant=grant, reason="test")
    response = refresh(signed_in, issuer, agent, key, first["refresh_token"])
    assert response.json()["error"] == "invalid_grant"
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()


def test_refresh_fails_once_the_grant_expired(issuer, signed_in, world):
    from django.utils import timezone

    agent, key = world.interactive_agent()
    query, verifier = get_code(signed_in, issuer, world, agent)
    first = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier).json()
    Grant.objects.filter(agent=agent).update(expires_at=timezone.now())  # lapsed, not revoked
    response = refresh(signed_in, issuer, agent, key, first["refresh_token"])
    assert response.json()["error"] == "invalid_grant"
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()


def test_authorization_refuses_unknown_audience_and_capabilities_outside_the_ceiling(
    issuer, signed_in, world
):
    agent, _ = world.interactive_agent(ceiling=[world.read])
    _, challenge = helpers.pkce_pair()
    unknown = helpers.authorize(
        signed_in,
        issuer,
        client_id=agent.application.client_id,
        scope="records.read_own",
        resource="https://unknown.example.test/mcp",
        challenge=challenge,
    )
    assert helpers.code_from(unknown)["error"] == "invalid_target"
    outside = helpers.authorize(
        signed_in,
        issuer,
        client_id=agent.application.client_id,
        scope="records.read_own records.write_own",
        resource=world.records.audience,
        challenge=challenge,
    )
    assert helpers.code_from(outside)["error"] == "invalid_scope"
    event = AuditEvent.objects.get(action="elevation.attempted")
    assert json.loads(event.parameters)["outside_ceiling"] == ["records.write_own"]


def test_public_client_uses_pkce_without_a_secret(issuer, signed_in, world):
    agent, _ = world.interactive_agent(auth_method="none")
    query, verifier = get_code(signed_in, issuer, world, agent)
    data = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": helpers.REDIRECT_URI,
        "code_verifier": verifier,
        "client_id": agent.application.client_id,
    }
    response = signed_in.post(f"{issuer}/oauth/token/", data=data)
    assert response.status_code == 200, response.text
    # A confidential (private_key_jwt) agent cannot pass itself off as public.
    jwt_agent, _ = world.interactive_agent()
    query, verifier = get_code(signed_in, issuer, world, jwt_agent)
    data.update(code=query["code"], code_verifier=verifier, client_id=jwt_agent.application.client_id)
    assert signed_in.post(f"{issuer}/oauth/token/", data=data).json()["error"] == "invalid_client"


def test_revoking_a_refresh_token_revokes_its_access_tokens(issuer, signed_in, world):
    agent, key = world.interactive_agent()
    query, verifier = get_code(signed_in, issuer, world, agent)
    first = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier).json()
    data = {"token": first["refresh_token"], "token_type_hint": "refresh_token"}
    data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/revoke/"))
    assert signed_in.post(f"{issuer}/oauth/revoke/", data=data).status_code == 200
    assert not TokenRecord.objects.exists()
    assert refresh(signed_in, issuer, agent, key, first["refresh_token"]).json()["error"] == "invalid_grant"
    assert AuditEvent.objects.get(action="token.revoked").on_behalf_of_id == world.member.pk
