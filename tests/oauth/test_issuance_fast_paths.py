"""The shortcuts that make issuance fast keep every rule: round trips, key caches, signing, the audience."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from authlib.jose import JsonWebKey, JsonWebToken
from django.db import transaction
from django.utils import timezone
from jwcrypto import jws
from oauth2_provider.signals import app_authorized

from audit.actions import ActorType
from audit.models import AuditEvent
from audit.services import Actor
from governance.models import Agent, SigningKey, TokenRecord
from governance.oauth import jwt_tokens, signing_keys
from governance.oauth.refusals import Refusal as BrokerRefusal
from governance.oauth.scoping import evaluate_for_resource, evaluate_request, resolve_audience
from governance.services.signing_keys import signing_key_rotate
from tests.factories import CapabilityFactory, OrganizationFactory, ToolServerFactory
from tests.oauth import helpers

SYSTEM = Actor(type=ActorType.SYSTEM, label="test")

pytestmark = pytest.mark.django_db(transaction=True)


def issue(client, settings, agent, key, *, scope="records.read_own", resource=None):
    data = {"grant_type": "client_credentials", "scope": scope, "resource": resource}
    data.update(helpers.assertion_params(key, agent.application.client_id, settings.GATEHOUSE_ISSUER))
    return client.post("/oauth/token/", data=data)


@pytest.mark.postgres  # the count is PostgreSQL's (on SQLite an audit append takes three statements)
@pytest.mark.parametrize(("direct", "round_trips"), [(True, 2), (False, 7)], ids=["direct", "through-dot"])
def test_client_credentials_issuance_round_trips(
    client, settings, world, django_assert_num_queries, direct, round_trips
):
    settings.GATEHOUSE_TOKEN_DIRECT_PATH = direct
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    assert issue(client, settings, agent, key, resource=world.records.audience).status_code == 200
    # Direct: the agent with its grants; one statement storing the access token, its TokenRecord and the
    # audit event.  Through DOT: application + agent; grants + capability + tool server; BEGIN; access
    # token; TokenRecord; audit_append(); COMMIT.  Neither reads the signing key (cached) or the token back.
    with django_assert_num_queries(round_trips):
        response = issue(client, settings, agent, key, resource=world.records.audience)
    assert response.status_code == 200, response.content
    jti = jwt_tokens.verify(response.json()["access_token"])["jti"]
    assert TokenRecord.objects.get(jti=jti).access_token_id is not None
    assert AuditEvent.objects.filter(action="token.issued", parameters__contains=jti).count() == 1


def test_app_authorized_still_fires_for_a_listener(client, settings, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    seen = []

    def listener(sender, request, token, **kwargs):
        seen.append(token)

    app_authorized.connect(listener)
    try:
        response = issue(client, settings, agent, key, resource=world.records.audience)
    finally:
        app_authorized.disconnect(listener)
    assert response.status_code == 200
    checksum = hashlib.sha256(response.json()["access_token"].encode()).hexdigest()
    assert [token.token_checksum for token in seen] == [checksum]


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_signed_tokens_verify_with_jwcrypto_and_authlib(world, alg):
    signing_key_rotate(actor=SYSTEM, alg=alg, now=True)
    now = timezone.now()
    claims = jwt_tokens.AccessTokenClaims(
        issuer="https://gatehouse.test",
        subject="client-1",
        client_id="client-1",
        audience=world.records.audience,
        scope=["records.read_own"],
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
        jti="abc",
    )
    token = jwt_tokens.sign(claims)
    parsed = jws.JWS()
    parsed.deserialize(token)
    record, _ = signing_keys.signing_key()
    assert parsed.jose_header == {"typ": "at+jwt", "alg": alg, "kid": record.kid}
    assert jwt_tokens.verify(token, audience=world.records.audience) == claims.as_dict()
    keys = JsonWebKey.import_key_set(signing_keys.jwks())
    decoded = JsonWebToken([alg]).decode(token, keys)
    decoded.validate()
    assert dict(decoded) == claims.as_dict()
    # A flipped signature bit is refused by both.
    head, body, signature = token.split(".")
    forged = f"{head}.{body}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    with pytest.raises(Exception):  # noqa: B017 - each library raises its own type
        jwt_tokens.verify(forged)
    with pytest.raises(Exception):  # noqa: B017
        JsonWebToken([alg]).decode(forged, keys)


def test_the_signing_key_is_read_once_until_a_rotation(world, django_assert_num_queries):
    first, _ = signing_keys.signing_key()
    with django_assert_num_queries(0):
        assert signing_keys.signing_key()[0] == first
    new = signing_key_rotate(actor=SYSTEM, now=True)
    assert signing_keys.signing_key()[0] == new  # the rotating process forgets its cached key at once
    SigningKey.objects.filter(pk=new.pk).update(retired_at=timezone.now() + timedelta(seconds=1))
    signing_keys.forget_signing_key()
    # Read inside a transaction: not remembered (the transaction could still roll back a new key).
    with transaction.atomic():
        signing_keys.signing_key()
    with django_assert_num_queries(1):
        signing_keys.signing_key()


def test_a_changed_client_key_takes_effect_at_once(client, settings, world):
    agent, old_key = world.background_agent()
    helpers.grant(agent, world.read)
    assert issue(client, settings, agent, old_key, resource=world.records.audience).status_code == 200
    new_key = helpers.new_key()
    Agent.objects.filter(pk=agent.pk).update(jwks=helpers.public_jwks(new_key))
    refused = issue(client, settings, agent, old_key, resource=world.records.audience)
    assert refused.status_code == 401, refused.content
    assert issue(client, settings, agent, new_key, resource=world.records.audience).status_code == 200


def test_audience_and_grants_in_one_query_agree_with_the_two_step_rule(world, django_assert_num_queries):
    agent, _ = world.background_agent()
    helpers.grant(agent, world.read)
    other = OrganizationFactory(slug="elsewhere", name="Elsewhere")
    foreign = ToolServerFactory(organization=other, name="Theirs", audience="https://theirs.example.test/mcp")
    CapabilityFactory(tool_server=foreign, key="records.read_own")
    cases = [
        ([world.records.audience], ["records.read_own"]),  # covered
        ([world.records.audience], ["records.read_own", "records.write_own"]),  # one not granted
        ([world.records.audience], ["calendar.book"]),  # not on this audience
        ([world.calendar.audience], ["records.read_own"]),  # wrong audience for the grant
        ([foreign.audience], ["records.read_own"]),  # another organization's tool server
        (["https://unknown.example.test/mcp"], ["records.read_own"]),
        ([], ["records.read_own"]),
        ([world.records.audience, world.calendar.audience], ["records.read_own"]),
    ]
    for resources, requested in cases:
        try:
            server = resolve_audience(resources, agent=agent)
            expected = evaluate_request(agent=agent, user=None, audience=server, requested=requested)
        except BrokerRefusal as refusal:
            with pytest.raises(BrokerRefusal) as raised:
                evaluate_for_resource(resources, agent=agent, user=None, requested=requested)
            assert (raised.value.error, raised.value.description) == (refusal.error, refusal.description)
            continue
        got_server, got = evaluate_for_resource(resources, agent=agent, user=None, requested=requested)
        assert got_server == server
        assert (got.allowed, got.refused, got.outside_ceiling, got.lifetime_seconds) == (
            expected.allowed,
            expected.refused,
            expected.outside_ceiling,
            expected.lifetime_seconds,
        ), (resources, requested)
    with django_assert_num_queries(1):
        server, decision = evaluate_for_resource(
            [world.records.audience], agent=agent, user=None, requested=["records.read_own"]
        )
    assert decision.ok and server == world.records
    assert json.dumps(decision.allowed) == '["records.read_own"]'
