"""RFC 8693 on-behalf-of token exchange over real HTTP: an agent acting for a user, narrowing only.

The world: pat signs in and lets the front agent (A) read and write records (code + PKCE); the helper
agent (B) is granted only ``records.read_own`` for pat; a third agent (C) likewise; a stranger agent (D)
has nothing for pat.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from oauth2_provider.models import AccessToken, set_token_value

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance.models import Grant, TokenRecord
from governance.oauth import direct as direct_path
from governance.oauth import jwt_tokens
from governance.oauth.dpop import thumbprint
from governance.services import agent_suspend
from tests.factories import UserFactory
from tests.oauth import dpop_client, helpers

pytestmark = pytest.mark.django_db(transaction=True)

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT = "urn:ietf:params:oauth:token-type:jwt"


def token_request(http, issuer, agent, key, data, *, headers=None):
    body = dict(data)
    body.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
    return http.post(f"{issuer}/oauth/token/", data=body, headers=headers or {})


def exchange(http, issuer, agent, key, subject_token, *, resource, scope=None, headers=None, **extra):
    data = {"grant_type": GRANT, "subject_token": subject_token, "subject_token_type": ACCESS}
    if resource is not None:
        data["resource"] = resource
    if scope is not None:
        data["scope"] = scope
    data.update(extra)
    return token_request(http, issuer, agent, key, data, headers=headers)


def user_token(http, issuer, world, agent, key, *, scope="records.read_own records.write_own", headers=None):
    """pat signs in, consents, and the agent exchanges the code: a user token on the records server."""
    helpers.login(http, world.member)
    verifier, challenge = helpers.pkce_pair()
    answer = helpers.authorize(
        http,
        issuer,
        client_id=agent.application.client_id,
        scope=scope,
        resource=world.records.audience,
        challenge=challenge,
    )
    query = helpers.code_from(answer)
    data = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": helpers.REDIRECT_URI,
        "code_verifier": verifier,
    }
    response = token_request(http, issuer, agent, key, data, headers=headers)
    assert response.status_code == 200, response.text
    http.cookies.clear()
    return response.json()["access_token"]


def introspect(http, issuer, tool_server, key, token):
    data = {"token": token}
    data.update(
        helpers.assertion_params(key, tool_server.application.client_id, f"{issuer}/oauth/introspect/")
    )
    return http.post(f"{issuer}/oauth/introspect/", data=data).json()


def events(action, **filters):
    return list(AuditEvent.objects.filter(action=action, **filters).order_by("seq"))


def params(event) -> dict:
    return json.loads(event.parameters)


class Delegation:
    def __init__(self, http, issuer, world):
        self.world = world
        self.front, self.front_key = world.interactive_agent(name="front")
        self.helper, self.helper_key = world.interactive_agent(name="helper")
        self.third, self.third_key = world.interactive_agent(name="third")
        self.stranger, self.stranger_key = world.interactive_agent(name="stranger")
        helpers.grant(self.helper, world.read, world.member)
        helpers.grant(self.third, world.read, world.member)
        self.subject_token = user_token(http, issuer, world, self.front, self.front_key)
        self.subject = jwt_tokens.verify(self.subject_token)

    @property
    def user_id(self) -> str:
        return str(self.world.member.pk)


@pytest.fixture
def d(issuer, http, world):
    return Delegation(http, issuer, world)


# ---- the happy path and what the token says ----------------------------------------------------------------


def test_an_agent_gets_a_token_for_the_user_that_names_itself_as_actor(issuer, http, world, d):
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token,
        resource=world.records.audience, scope="records.read_own",
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["Cache-Control"]
    body = response.json()
    assert body["issued_token_type"] == ACCESS
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "records.read_own"
    assert "refresh_token" not in body
    assert 0 < body["expires_in"] <= d.subject["exp"] - d.subject["iat"]

    claims = jwt_tokens.verify(body["access_token"], audience=world.records.audience)
    helper_id = d.helper.application.client_id
    assert claims["sub"] == d.user_id == d.subject["sub"]
    assert claims["client_id"] == helper_id
    assert claims["aud"] == world.records.audience
    assert claims["act"] == {"sub": helper_id}
    assert claims["scope"] == "records.read_own"
    assert claims["exp"] <= d.subject["exp"]
    assert claims["jti"] != d.subject["jti"]

    record = TokenRecord.objects.get(jti=claims["jti"])
    assert record.act == {"sub": helper_id} and record.user == world.member and record.agent == d.helper
    assert record.grant_type == GRANT

    (event,) = events("token.exchanged")
    assert event.result == "success"
    assert event.on_behalf_of_id == world.member.pk and event.agent_id == d.helper.pk
    assert event.capabilities == "records.read_own"
    recorded = params(event)
    assert recorded["actor_chain"] == [helper_id]
    assert recorded["subject_jti"] == d.subject["jti"] and recorded["jti"] == claims["jti"]
    assert recorded["subject_audience"] == world.records.audience
    assert recorded["audience"] == world.records.audience
    assert recorded["subject_client_id"] == d.front.application.client_id
    assert recorded["permission"] == "grant"
    # Never a token value in the trail.
    assert d.subject_token not in event.parameters and body["access_token"] not in event.parameters
    assert not events("token.issued", agent_id=d.helper.pk)


def test_without_scope_the_token_carries_the_intersection(issuer, http, world, d):
    # The subject token holds read and write; the helper is granted only read for pat.
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token, resource=world.records.audience
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "records.read_own"


def test_audience_parameter_names_the_target_too(issuer, http, world, d):
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token,
        resource=None, audience=world.records.audience, subject_token_type=JWT,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    claims = jwt_tokens.verify(response.json()["access_token"])
    assert claims["aud"] == world.records.audience


def test_the_lifetime_never_exceeds_the_subject_tokens_remaining_time(issuer, http, world, d):
    record = TokenRecord.objects.get(jti=d.subject["jti"])
    soon = timezone.now() + timedelta(seconds=40)
    TokenRecord.objects.filter(pk=record.pk).update(expires_at=soon)
    AccessToken.objects.filter(pk=record.access_token_id).update(expires=soon)
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token, resource=world.records.audience
    )
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] <= 40
    assert jwt_tokens.verify(response.json()["access_token"])["exp"] <= int(soon.timestamp())


# ---- only narrowing --------------------------------------------------------------------------------------


def test_upscoping_beyond_the_actors_grants_is_refused_and_audited(issuer, http, world, d):
    # records.write_own is in the subject token, but the helper has no grant for it.
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token,
        resource=world.records.audience, scope="records.read_own records.write_own",
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    (event,) = events("elevation.attempted")
    assert event.result == "denied" and event.agent_id == d.helper.pk
    assert event.on_behalf_of_id == world.member.pk
    recorded = params(event)
    assert recorded["requested"] == ["records.read_own", "records.write_own"]
    assert recorded["allowed"] == ["records.read_own"]
    assert recorded["stage"] == "token_exchange"
    assert not TokenRecord.objects.filter(agent=d.helper).exists()
    assert not events("token.exchanged")


def test_capabilities_the_subject_token_lacks_are_refused_even_when_granted(issuer, http, world, d):
    # The helper is granted write for pat, but pat's token to the front agent carries only read.
    narrow = user_token(http, issuer, world, d.front, d.front_key, scope="records.read_own")
    helpers.grant(d.helper, world.write, world.member)
    response = exchange(
        http, issuer, d.helper, d.helper_key, narrow,
        resource=world.records.audience, scope="records.write_own",
    )  # fmt: skip
    assert response.json()["error"] == "invalid_scope"
    assert params(events("elevation.attempted")[-1])["subject_scope"] == ["records.read_own"]


def test_a_target_without_common_capabilities_is_refused(issuer, http, world, d):
    helpers.grant(d.helper, world.book, world.member)
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token, resource=world.calendar.audience
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


# ---- the target ------------------------------------------------------------------------------------------


def test_an_unregistered_audience_is_refused(issuer, http, world, d):
    for target in ({"resource": "https://unknown.example.test/mcp"}, {"audience": "unknown"}):
        response = exchange(
            http, issuer, d.helper, d.helper_key, d.subject_token, resource=target.get("resource"),
            **{k: v for k, v in target.items() if k != "resource"},
        )  # fmt: skip
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_target"
    no_target = exchange(http, issuer, d.helper, d.helper_key, d.subject_token, resource=None)
    assert no_target.json()["error"] == "invalid_target"
    two = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token,
        resource=world.records.audience, audience=world.calendar.audience,
    )  # fmt: skip
    assert two.json()["error"] == "invalid_target"
    refused = events("token.refused")
    assert len(refused) == 4 and all(params(e)["error"] == "invalid_target" for e in refused)
    assert not TokenRecord.objects.filter(agent=d.helper).exists()


# ---- the actor -------------------------------------------------------------------------------------------


def test_an_actor_without_permission_for_this_user_is_refused(issuer, http, world, d):
    # The stranger holds grants, but for another user, or for pat on another tool server: it may not act
    # for pat on the records server.
    other = UserFactory(organization=world.org, username="sam")
    helpers.grant(d.stranger, world.read, other)
    helpers.grant(d.stranger, world.book, world.member)
    response = exchange(
        http, issuer, d.stranger, d.stranger_key, d.subject_token,
        resource=world.records.audience, scope="records.read_own",
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    (event,) = events("token.refused")
    assert event.agent_id == d.stranger.pk and event.on_behalf_of_id == world.member.pk
    assert params(event)["client_id"] == d.stranger.application.client_id
    assert params(event)["reason"] == (
        "no may_act naming the actor and no grant for this user and actor on the audience"
    )
    assert d.subject_token not in event.parameters
    assert not TokenRecord.objects.filter(agent=d.stranger).exists()


def test_the_actor_must_authenticate_and_be_usable(issuer, http, world, d):
    # No client authentication at all.
    anonymous = http.post(
        f"{issuer}/oauth/token/",
        data={"grant_type": GRANT, "subject_token": d.subject_token, "subject_token_type": ACCESS,
              "resource": world.records.audience, "client_id": d.helper.application.client_id},
    )  # fmt: skip
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    # A suspended helper gets nothing.
    agent_suspend(actor=SYSTEM, agent=d.third, reason="test")
    suspended = exchange(http, issuer, d.third, d.third_key, d.subject_token, resource=world.records.audience)
    assert suspended.json()["error"] == "invalid_client"
    # A background agent acts for nobody.
    background, background_key = world.background_agent()
    helpers.grant(background, world.read)
    response = exchange(
        http, issuer, background, background_key, d.subject_token, resource=world.records.audience
    )
    assert response.json()["error"] == "unauthorized_client"
    # A tool server's client cannot exchange either, and DOT's grant mapping does not turn that into a 500.
    server_key = world.tool_server_key(world.records)
    as_server = token_request(
        http, issuer, world.records, server_key,
        {"grant_type": GRANT, "subject_token": d.subject_token, "subject_token_type": ACCESS,
         "resource": world.records.audience},
    )  # fmt: skip
    assert as_server.status_code == 400
    assert as_server.json()["error"] == "unauthorized_client"


def test_the_user_comes_from_the_subject_token_only(issuer, http, world, d):
    other = UserFactory(organization=world.org, username="sam")
    helpers.grant(d.helper, world.read, other)
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token,
        resource=world.records.audience, scope="records.read_own",
        sub=str(other.pk), subject=str(other.pk), user_id=str(other.pk), username="sam",
        on_behalf_of=str(other.pk),
    )  # fmt: skip
    assert response.status_code == 200, response.text
    claims = jwt_tokens.verify(response.json()["access_token"])
    assert claims["sub"] == d.user_id != str(other.pk)
    assert TokenRecord.objects.get(jti=claims["jti"]).user == world.member


def test_an_actor_token_must_name_the_authenticated_client(issuer, http, world, d):
    # The front agent's token names the front agent, not the helper.
    wrong = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token,
        resource=world.records.audience, actor_token=d.subject_token, actor_token_type=ACCESS,
    )  # fmt: skip
    assert wrong.json()["error"] == "invalid_request"
    # A token issued to the helper itself is an acceptable actor token.
    own = exchange(http, issuer, d.helper, d.helper_key, d.subject_token, resource=world.records.audience)
    own_token = own.json()["access_token"]
    right = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token,
        resource=world.records.audience, actor_token=own_token, actor_token_type=JWT,
    )  # fmt: skip
    assert right.status_code == 200, right.text
    recorded = params(events("token.exchanged")[-1])
    assert recorded["actor_jti"] == jwt_tokens.verify(own_token)["jti"]


# ---- malformed requests and bad subject tokens -----------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"},
        {"subject_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
        {"subject_token_type": ""},
        {"subject_token": ""},
        {"actor_token": "anything"},  # actor_token without actor_token_type
        {"actor_token_type": ACCESS},  # actor_token_type without actor_token
        {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
        {"requested_token_type": "urn:ietf:params:oauth:token-type:id_token"},
    ],
)
def test_malformed_exchange_requests_are_invalid_request(issuer, http, world, d, changes):
    data = {
        "grant_type": GRANT,
        "subject_token": d.subject_token,
        "subject_token_type": ACCESS,
        "resource": world.records.audience,
        **changes,
    }
    response = token_request(http, issuer, d.helper, d.helper_key, data)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert d.subject_token not in response.text
    assert not TokenRecord.objects.filter(agent=d.helper).exists()


def test_a_tampered_subject_token_is_refused(issuer, http, world, d):
    header, payload, signature = d.subject_token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for token in (f"{header}.{payload}.{flipped}", d.subject_token + "x", "not-a-token"):
        response = exchange(http, issuer, d.helper, d.helper_key, token, resource=world.records.audience)
        assert response.json()["error"] == "invalid_request"
    assert not TokenRecord.objects.filter(agent=d.helper).exists()


def test_an_expired_subject_token_is_refused(issuer, http, world, d):
    record = TokenRecord.objects.get(jti=d.subject["jti"])
    AccessToken.objects.filter(pk=record.access_token_id).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token, resource=world.records.audience
    )
    assert response.json()["error"] == "invalid_request"


def test_a_revoked_subject_token_is_refused(issuer, http, world, d):
    data = {"token": d.subject_token}
    data.update(
        helpers.assertion_params(d.front_key, d.front.application.client_id, f"{issuer}/oauth/revoke/")
    )
    assert http.post(f"{issuer}/oauth/revoke/", data=data).status_code == 200
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token, resource=world.records.audience
    )
    assert response.json()["error"] == "invalid_request"


def test_a_subject_token_whose_grant_lapsed_is_refused(issuer, http, world, d):
    Grant.objects.filter(agent=d.front).update(revoked_at=timezone.now())
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token, resource=world.records.audience
    )
    assert response.json()["error"] == "invalid_request"


def test_a_background_subject_token_is_refused(issuer, http, world, d):
    background, background_key = world.background_agent()
    helpers.grant(background, world.read)
    issued = token_request(
        http, issuer, background, background_key,
        {"grant_type": "client_credentials", "scope": "records.read_own", "resource": world.records.audience},
    )  # fmt: skip
    service_token = issued.json()["access_token"]
    response = exchange(http, issuer, d.helper, d.helper_key, service_token, resource=world.records.audience)
    assert response.json()["error"] == "invalid_request"


# ---- may_act -------------------------------------------------------------------------------------------


def token_with_may_act(world, agent, may_act_sub: str) -> str:
    """A user token carrying ``may_act`` (Gatehouse mints none yet), stored as the broker stores tokens."""
    now = timezone.now()
    jti = uuid.uuid4().hex
    claims = jwt_tokens.AccessTokenClaims(
        issuer=settings.GATEHOUSE_ISSUER,
        subject=str(world.member.pk),
        client_id=agent.application.client_id,
        audience=world.records.audience,
        scope=["records.read_own"],
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
        jti=jti,
        extra={"may_act": {"sub": may_act_sub}},
    )
    value = jwt_tokens.sign(claims)
    access_token = AccessToken(
        user=world.member,
        scope="records.read_own",
        expires=claims.expires_at,
        application=agent.application,
        resource=[world.records.audience],
    )
    set_token_value(access_token, value)
    access_token.save()
    TokenRecord.objects.create(
        access_token=access_token,
        jti=jti,
        audience=world.records.audience,
        tool_server=world.records,
        agent=agent,
        user=world.member,
        subject=str(world.member.pk),
        client_id=agent.application.client_id,
        capabilities="records.read_own",
        grant_type="authorization_code",
        issued_at=now,
        expires_at=claims.expires_at,
    )
    return value


def test_may_act_passes_the_actor_check_but_capabilities_still_need_the_actors_grants(issuer, http, world, d):
    stranger_id = d.stranger.application.client_id
    named = token_with_may_act(world, d.front, stranger_id)
    # Named by may_act, but without a grant of its own the intersection is empty.
    empty = exchange(http, issuer, d.stranger, d.stranger_key, named, resource=world.records.audience)
    assert empty.json()["error"] == "invalid_scope"
    assert params(events("token.refused")[-1])["reason"] == (
        "the subject token and the actor's grants have no capability in common"
    )
    # Named and granted: issued, and the audit says which rule let it act.
    helpers.grant(d.stranger, world.read, world.member)
    ok = exchange(http, issuer, d.stranger, d.stranger_key, named, resource=world.records.audience)
    assert ok.status_code == 200, ok.text
    assert params(events("token.exchanged")[-1])["permission"] == "may_act"
    # may_act naming someone else does not help a client without a grant.
    other = token_with_may_act(world, d.front, d.helper.application.client_id)
    Grant.objects.filter(agent=d.stranger).update(revoked_at=timezone.now())
    refused = exchange(http, issuer, d.stranger, d.stranger_key, other, resource=world.records.audience)
    assert refused.json()["error"] == "invalid_request"


# ---- chains ----------------------------------------------------------------------------------------------


def test_act_is_preserved_through_two_exchanges_and_visible_in_introspection_and_audit(
    issuer, http, world, d
):
    first = exchange(http, issuer, d.helper, d.helper_key, d.subject_token, resource=world.records.audience)
    assert first.status_code == 200, first.text
    second = exchange(
        http, issuer, d.third, d.third_key, first.json()["access_token"], resource=world.records.audience
    )
    assert second.status_code == 200, second.text
    helper_id, third_id = d.helper.application.client_id, d.third.application.client_id
    chain = {"sub": third_id, "act": {"sub": helper_id}}

    token = second.json()["access_token"]
    claims = jwt_tokens.verify(token)
    assert claims["act"] == chain
    assert claims["sub"] == d.user_id and claims["client_id"] == third_id
    assert claims["exp"] <= jwt_tokens.verify(first.json()["access_token"])["exp"] <= d.subject["exp"]

    records_key = world.tool_server_key(world.records)
    seen = introspect(http, issuer, world.records, records_key, token)
    assert seen["active"] is True
    assert seen["act"] == chain and seen["sub"] == d.user_id and seen["client_id"] == third_id

    first_event, second_event = events("token.exchanged")
    assert params(first_event)["actor_chain"] == [helper_id]
    assert params(second_event)["actor_chain"] == [third_id, helper_id]
    assert params(second_event)["subject_client_id"] == helper_id
    assert second_event.on_behalf_of_id == world.member.pk


# ---- discovery and DOT ------------------------------------------------------------------------------------


def test_metadata_lists_the_grant_type(issuer, http, world):
    meta = http.get(f"{issuer}/.well-known/oauth-authorization-server").json()
    assert GRANT in meta["grant_types_supported"]


# ---- DPoP ------------------------------------------------------------------------------------------------


def dpop_proof(issuer, key, **kwargs) -> dict:
    return {"DPoP": dpop_client.make_proof("POST", f"{issuer}/oauth/token/", key, **kwargs)}


def test_a_dpop_bound_subject_token_needs_a_proof_by_the_same_key(issuer, http, world, d):
    key = dpop_client.new_key()
    bound = user_token(
        http, issuer, world, d.front, d.front_key, scope="records.read_own", headers=dpop_proof(issuer, key)
    )
    jkt = thumbprint(dpop_client.public_jwk(key))
    assert jwt_tokens.verify(bound)["cnf"] == {"jkt": jkt}
    front = d.front

    missing = exchange(http, issuer, front, d.front_key, bound, resource=world.records.audience)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_dpop_proof"
    other = exchange(
        http, issuer, front, d.front_key, bound,
        resource=world.records.audience, headers=dpop_proof(issuer, dpop_client.new_key()),
    )  # fmt: skip
    assert other.json()["error"] == "invalid_dpop_proof"
    refused = events("dpop.proof_refused")
    assert [params(e)["reason"] for e in refused] == ["missing", "key_mismatch"]
    assert all(params(e)["binding"] == "subject_token" for e in refused)
    assert all(e.on_behalf_of_id == world.member.pk for e in refused)
    assert not events("token.exchanged")

    good = exchange(
        http, issuer, front, d.front_key, bound,
        resource=world.records.audience, headers=dpop_proof(issuer, key),
    )  # fmt: skip
    assert good.status_code == 200, good.text
    assert good.json()["token_type"] == "DPoP"
    claims = jwt_tokens.verify(good.json()["access_token"])
    assert claims["cnf"] == {"jkt": jkt} and claims["act"] == {"sub": front.application.client_id}
    assert TokenRecord.objects.get(jti=claims["jti"]).cnf_jkt == jkt
    assert params(events("token.exchanged")[-1])["dpop_bound"] is True


def test_an_unbound_subject_token_exchanged_with_a_proof_gives_a_bound_token(issuer, http, world, d):
    key = dpop_client.new_key()
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token,
        resource=world.records.audience, headers=dpop_proof(issuer, key),
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    claims = jwt_tokens.verify(response.json()["access_token"])
    assert claims["cnf"] == {"jkt": thumbprint(dpop_client.public_jwk(key))}


def test_an_agent_that_requires_dpop_gets_nothing_without_a_proof(issuer, http, world, d):
    d.helper.dpop_bound_tokens_required = True
    d.helper.save(update_fields=["dpop_bound_tokens_required"])
    response = exchange(
        http, issuer, d.helper, d.helper_key, d.subject_token, resource=world.records.audience
    )
    assert response.json()["error"] == "invalid_dpop_proof"
    assert params(events("dpop.proof_refused")[-1])["binding"] == "agent_requires_dpop"


def test_a_delegation_chain_has_a_limit(issuer, http, world, d):
    token = d.subject_token
    for _ in range(5):
        response = exchange(http, issuer, d.helper, d.helper_key, token, resource=world.records.audience)
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
    assert len(params(events("token.exchanged")[-1])["actor_chain"]) == 5
    too_long = exchange(http, issuer, d.helper, d.helper_key, token, resource=world.records.audience)
    assert too_long.json()["error"] == "invalid_request"


def test_a_public_client_cannot_exchange(issuer, http, world, d):
    public, _ = world.interactive_agent(name="public", auth_method="none")
    helpers.grant(public, world.read, world.member)
    response = http.post(
        f"{issuer}/oauth/token/",
        data={
            "grant_type": GRANT,
            "client_id": public.application.client_id,
            "subject_token": d.subject_token,
            "subject_token_type": ACCESS,
            "resource": world.records.audience,
        },
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert not TokenRecord.objects.filter(agent=public).exists()


def test_repeated_exchange_parameters_are_refused(issuer, http, world, d):
    # DOT would silently keep the last value of each: the agent must not get a token it did not ask for.
    other = user_token(http, issuer, world, d.front, d.front_key, scope="records.read_own")
    base = {"grant_type": GRANT, "subject_token_type": ACCESS, "resource": world.records.audience}
    for repeated in (
        {"subject_token": [d.subject_token, other]},
        {"subject_token": other, "audience": [world.calendar.audience, world.records.audience]},
        {"subject_token": other, "subject_token_type": [ACCESS, JWT]},
    ):
        response = token_request(http, issuer, d.helper, d.helper_key, {**base, **repeated})
        assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert not TokenRecord.objects.filter(agent=d.helper).exists()


# ---- the direct path answers an exchange exactly as DOT's path does --------------------------------------


def _exchange_outcome(response, seq: int) -> dict:
    """What the client and the auditor see of one exchange, less the values random per token."""
    body = response.json()
    result = {
        "status": response.status_code,
        "members": list(body),
        "headers": {name: response.headers.get(name) for name in ("Content-Type", "Pragma", "DPoP-Nonce")},
        "error": body.get("error"),
        "events": [
            {
                "action": e.action,
                "result": e.result,
                "agent_id": e.agent_id,
                "on_behalf_of_id": e.on_behalf_of_id,
                "capabilities": e.capabilities,
                "parameters": {k: v for k, v in params(e).items() if k != "jti"},
            }
            for e in AuditEvent.objects.filter(seq__gt=seq).order_by("seq")
        ],
    }
    if response.status_code == 200:
        claims = jwt_tokens.verify(body["access_token"])
        record = TokenRecord.objects.get(jti=claims["jti"])
        row = AccessToken.objects.get(gatehouse_record__jti=claims["jti"])
        result["body"] = {k: v for k, v in body.items() if k not in ("access_token", "expires_in")}
        result["claims"] = {k: v for k, v in claims.items() if k not in ("jti", "iat", "exp")}
        result["row"] = {
            "user_id": row.user_id,
            "application_id": row.application_id,
            "scope": row.scope,
            "resource": row.resource,
            "token": row.token,
            "source_refresh_token_id": row.source_refresh_token_id,
            "expires_matches_record": row.expires == record.expires_at,
        }
        result["record"] = {
            f: getattr(record, f)
            for f in (
                "audience", "tool_server_id", "agent_id", "user_id", "subject", "client_id",
                "capabilities", "grant_type", "token_family", "act", "cnf_jkt", "acr",
            )
        }  # fmt: skip
    return result


def _last_seq() -> int:
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


@pytest.mark.parametrize("bound", [False, True], ids=["bearer", "dpop"])
def test_an_exchange_is_answered_and_stored_the_same_both_ways(
    issuer, http, world, d, settings, bound, monkeypatch
):
    stored_directly = []
    store = direct_path._store
    monkeypatch.setattr(direct_path, "_store", lambda *a: stored_directly.append(a) or store(*a))
    outcomes = []
    proof_key = dpop_client.new_key()
    for direct in (True, False):
        settings.GATEHOUSE_TOKEN_DIRECT_PATH = direct
        headers = None
        if bound:
            headers = {"DPoP": dpop_client.make_proof("POST", f"{issuer}/oauth/token/", proof_key)}
        seq = _last_seq()
        response = exchange(
            http, issuer, d.helper, d.helper_key, d.subject_token,
            resource=world.records.audience, scope="records.read_own", headers=headers,
        )  # fmt: skip
        outcomes.append(_exchange_outcome(response, seq))
    direct, general = outcomes
    assert direct["status"] == 200, direct
    assert len(stored_directly) == 1  # the first exchange took the direct path, the second DOT's
    assert direct == general
    assert direct["body"]["token_type"] == ("DPoP" if bound else "Bearer")
    assert [event["action"] for event in direct["events"]] == ["token.exchanged"]


@pytest.mark.parametrize(
    "case", ["beyond the subject token", "no permission", "unknown target", "tampered subject token"]
)
def test_an_exchange_is_refused_the_same_both_ways(issuer, http, world, d, settings, case):
    outcomes = []
    for direct in (True, False):
        settings.GATEHOUSE_TOKEN_DIRECT_PATH = direct
        agent, key, token = d.helper, d.helper_key, d.subject_token
        kwargs = {"resource": world.records.audience, "scope": "records.read_own"}
        if case == "beyond the subject token":
            kwargs["scope"] = "records.read_own calendar.book"
        elif case == "no permission":
            agent, key = d.stranger, d.stranger_key
        elif case == "unknown target":
            kwargs["resource"] = "https://unknown.example.test/mcp"
        else:
            token = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        seq = _last_seq()
        outcomes.append(_exchange_outcome(exchange(http, issuer, agent, key, token, **kwargs), seq))
    direct, general = outcomes
    assert direct["status"] == 400, direct
    assert direct == general
    assert direct["events"], "a refusal is audited"
