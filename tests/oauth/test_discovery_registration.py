"""Metadata truthfulness, JWKS rotation and dynamic client registration, over HTTP against a live server."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance.models import Agent, SigningKey
from governance.oauth import jwt_tokens, signing_keys
from governance.services import agent_activate, initial_access_token_create
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)


def test_metadata_is_truthful(issuer, http, world):
    meta = http.get(f"{issuer}/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == issuer
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert set(meta["grant_types_supported"]) == {
        "authorization_code",
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:openid:params:grant-type:ciba",  # from the approvals app (GATEHOUSE_TOKEN_GRANT_TYPES)
    }
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    assert "HS256" not in meta["token_endpoint_auth_signing_alg_values_supported"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    for name in ("token_endpoint", "introspection_endpoint", "revocation_endpoint", "registration_endpoint"):
        answer = http.post(meta[name], data={})
        assert answer.status_code in (400, 401), (name, answer.status_code)
        assert "error" in answer.json()
    assert http.get(meta["jwks_uri"]).json()["keys"]
    assert http.get(meta["authorization_endpoint"]).status_code in (200, 302, 400)
    # A grant type the metadata does not list is refused.
    assert (
        http.post(meta["token_endpoint"], data={"grant_type": "password"}).json()["error"]
        == "unsupported_grant_type"
    )


def test_rotation_publishes_before_signing_and_keeps_old_keys(issuer, http, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    old, _ = signing_keys.signing_key()
    SigningKey.objects.filter(pk=old.pk).update(activated_at=timezone.now() - timedelta(hours=2))
    call_command("signing_keys", "rotate")
    new = SigningKey.objects.exclude(pk=old.pk).get()
    published = {k["kid"] for k in http.get(f"{issuer}/oauth/jwks.json").json()["keys"]}
    assert published == {old.kid, new.kid}
    assert signing_keys.signing_key()[0] == old  # the new key waits for caches to learn it
    SigningKey.objects.filter(pk=new.pk).update(activated_at=timezone.now() - timedelta(seconds=1))
    SigningKey.objects.filter(pk=old.pk).update(retired_at=timezone.now() - timedelta(seconds=1))
    data = {
        "grant_type": "client_credentials",
        "scope": "records.read_own",
        "resource": world.records.audience,
    }
    data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
    token = http.post(f"{issuer}/oauth/token/", data=data).json()["access_token"]
    assert jwt_tokens.verify(token)["aud"] == world.records.audience
    published = {k["kid"] for k in http.get(f"{issuer}/oauth/jwks.json").json()["keys"]}
    assert old.kid in published  # tokens it signed may still be alive
    SigningKey.objects.filter(pk=old.pk).update(
        activated_at=timezone.now() - timedelta(hours=2), retired_at=timezone.now() - timedelta(hours=1)
    )
    published = {k["kid"] for k in http.get(f"{issuer}/oauth/jwks.json").json()["keys"]}
    assert published == {new.kid}


def test_private_keys_are_encrypted_at_rest(world):
    key, _ = signing_keys.signing_key()
    assert "PRIVATE KEY" not in key.private_key_encrypted
    assert "d" not in key.public_jwk


def register(http, issuer, body, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.post(f"{issuer}/oauth/register/", json=body, headers=headers)


def test_open_registration_is_pending_until_an_admin_activates(issuer, http, world, settings):
    settings.GATEHOUSE_DCR_ORGANIZATION = "clinic"
    response = register(
        http,
        issuer,
        {
            "redirect_uris": [helpers.REDIRECT_URI],
            "token_endpoint_auth_method": "none",
            "client_name": "MCP client",
            "grant_types": ["authorization_code", "refresh_token"],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert "client_secret" not in body
    agent = Agent.objects.get(application__client_id=body["client_id"])
    assert agent.status == "pending" and agent.owner == world.admin and agent.kind == "interactive"
    assert AuditEvent.objects.get(action="client.registered").agent_id == agent.pk
    helpers.login(http, world.member)
    _, challenge = helpers.pkce_pair()
    page = helpers.authorize(
        http,
        issuer,
        client_id=body["client_id"],
        scope="records.read_own",
        resource=world.records.audience,
        challenge=challenge,
    )
    assert page.status_code != 302 or "code=" not in page.headers.get("location", "")
    agent_activate(actor=SYSTEM, agent=agent)
    agent.ceiling.set([world.read])
    verifier, challenge = helpers.pkce_pair()
    query = helpers.code_from(
        helpers.authorize(
            http,
            issuer,
            client_id=body["client_id"],
            scope="records.read_own",
            resource=world.records.audience,
            challenge=challenge,
        )
    )
    token = http.post(
        f"{issuer}/oauth/token/",
        data={
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": helpers.REDIRECT_URI,
            "code_verifier": verifier,
            "client_id": body["client_id"],
        },
    )
    assert token.status_code == 200, token.text


def test_initial_access_token_registers_an_active_agent_once(issuer, http, world):
    value, _ = initial_access_token_create(actor=SYSTEM, organization=world.org, ceiling=["records.read_own"])
    key = helpers.new_key()
    body = {
        "redirect_uris": [helpers.REDIRECT_URI],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": helpers.public_jwks(key),
    }
    response = register(http, issuer, body, token=value)
    assert response.status_code == 201, response.text
    agent = Agent.objects.get(application__client_id=response.json()["client_id"])
    assert agent.status == "active"
    assert list(agent.ceiling.values_list("key", flat=True)) == ["records.read_own"]
    again = register(http, issuer, body, token=value)
    assert again.status_code == 401 and again.json()["error"] == "invalid_token"


def test_registration_with_a_secret_returns_it_once_and_stores_a_hash(issuer, http, world, settings):
    settings.GATEHOUSE_DCR_ORGANIZATION = "clinic"
    response = register(
        http,
        issuer,
        {
            "redirect_uris": ["https://agent.example.test/cb"],
            "token_endpoint_auth_method": "client_secret_post",
        },
    )
    secret = response.json()["client_secret"]
    agent = Agent.objects.get(application__client_id=response.json()["client_id"])
    assert agent.application.client_secret != secret and secret not in json.dumps(
        list(AuditEvent.objects.values_list("parameters", flat=True))
    )


@pytest.mark.parametrize(
    "body",
    [
        {"redirect_uris": ["http://agent.example.test/cb"]},
        {"redirect_uris": ["https://agent.example.test/cb#frag"]},
        {"redirect_uris": []},
        {"redirect_uris": ["https://agent.example.test/cb"], "grant_types": ["implicit"]},
        {"redirect_uris": ["https://agent.example.test/cb"], "grant_types": ["client_credentials"]},
        {"redirect_uris": ["https://agent.example.test/cb"], "token_endpoint_auth_method": "private_key_jwt"},
        {"redirect_uris": ["https://agent.example.test/cb"], "response_types": ["token"]},
        ["not", "an", "object"],
    ],
)
def test_bad_registrations_are_refused(issuer, http, world, settings, body):
    settings.GATEHOUSE_DCR_ORGANIZATION = "clinic"
    response = register(http, issuer, body)
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")
    assert not Agent.objects.filter(description__contains="RFC 7591").exists()


def test_registration_needs_an_organization(issuer, http, world):
    response = register(http, issuer, {"redirect_uris": ["https://agent.example.test/cb"]})
    assert response.status_code == 403
