"""Client credentials with private_key_jwt, over HTTP against a live server."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from jwcrypto import jwk, jws, jwt

from audit.models import AuditEvent
from governance.models import TokenRecord
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)


def token_request(http, issuer, agent, key, *, resource, scope, aud=None, **assertion_kwargs):
    data = {"grant_type": "client_credentials", "scope": scope}
    if resource is not None:
        data["resource"] = resource
    data.update(
        helpers.assertion_params(
            key, agent.application.client_id, aud or f"{issuer}/oauth/token/", **assertion_kwargs
        )
    )
    return http.post(f"{issuer}/oauth/token/", data=data)


def test_background_agent_gets_a_signed_rfc9068_token(issuer, http, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    response = token_request(
        http, issuer, agent, key, resource=world.records.audience, scope="records.read_own"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "records.read_own"
    assert "refresh_token" not in body
    token = body["access_token"]

    header = jws.JWS()
    header.deserialize(token)
    assert header.jose_header["typ"] == "at+jwt"
    assert header.jose_header["alg"] == "ES256"

    published = http.get(f"{issuer}/oauth/jwks.json").json()
    assert all("d" not in member for member in published["keys"])
    keyset = jwk.JWKSet.from_json(json.dumps(published))
    claims = json.loads(jwt.JWT(jwt=token, key=keyset, algs=["ES256"]).claims)
    client_id = agent.application.client_id
    assert claims["iss"] == issuer
    assert claims["sub"] == client_id  # RFC 9068: no user, the client is the subject
    assert claims["client_id"] == client_id
    assert claims["aud"] == world.records.audience
    assert claims["scope"] == "records.read_own"
    assert claims["exp"] - claims["iat"] == body["expires_in"] <= 300
    record = TokenRecord.objects.get(jti=claims["jti"])
    assert record.agent == agent and record.user is None and record.audience == world.records.audience

    issued = AuditEvent.objects.get(action="token.issued")
    assert issued.agent_id == agent.pk and issued.capabilities == "records.read_own"
    assert claims["jti"] in issued.parameters and token not in issued.parameters


def test_lifetime_is_the_smallest_of_default_capability_and_grant(issuer, http, world):
    agent, key = world.background_agent()
    world.write.max_token_lifetime = 120
    world.write.save()
    helpers.grant(agent, world.read, expires_at=timezone.now() + timedelta(seconds=90))
    helpers.grant(agent, world.write)
    both = token_request(
        http, issuer, agent, key, resource=world.records.audience, scope="records.read_own records.write_own"
    )
    assert both.status_code == 200, both.text
    assert 85 <= both.json()["expires_in"] <= 90  # the grant ends first
    write_only = token_request(
        http, issuer, agent, key, resource=world.records.audience, scope="records.write_own"
    )
    assert write_only.json()["expires_in"] == 120  # the capability's maximum


def test_scope_beyond_the_grant_is_refused_and_audited(issuer, http, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    response = token_request(
        http, issuer, agent, key, resource=world.records.audience, scope="records.read_own records.write_own"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    event = AuditEvent.objects.get(action="elevation.attempted")
    params = json.loads(event.parameters)
    assert params["requested"] == ["records.read_own", "records.write_own"]
    assert params["allowed"] == ["records.read_own"]
    assert event.agent_id == agent.pk and event.result == "denied"
    assert not TokenRecord.objects.exists()


@pytest.mark.parametrize(
    ("resource", "error"),
    [
        ("https://unknown.example.test/mcp", "invalid_target"),
        (None, "invalid_target"),
        ("not a uri", "invalid_target"),
    ],
)
def test_audience_must_be_one_registered_tool_server(issuer, http, world, resource, error):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    response = token_request(http, issuer, agent, key, resource=resource, scope="records.read_own")
    assert response.status_code == 400
    assert response.json()["error"] == error
    refused = AuditEvent.objects.get(action="token.refused")
    assert json.loads(refused.parameters)["error"] == error


def test_capability_of_another_tool_server_is_refused(issuer, http, world):
    agent, key = world.background_agent(ceiling=[world.read, world.book])
    helpers.grant(agent, world.read)
    helpers.grant(agent, world.book)
    response = token_request(
        http, issuer, agent, key, resource=world.records.audience, scope="records.read_own calendar.book"
    )
    assert response.json()["error"] == "invalid_scope"


def test_no_scope_gets_an_error_not_everything(issuer, http, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    response = token_request(http, issuer, agent, key, resource=world.records.audience, scope="")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_no_scope_gets_the_agents_configured_minimum(issuer, http, world):
    agent, key = world.background_agent()
    agent.default_scope = "records.read_own"
    agent.save()
    helpers.grant(agent, world.read)
    helpers.grant(agent, world.write)
    response = token_request(http, issuer, agent, key, resource=world.records.audience, scope="")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "records.read_own"


@pytest.mark.parametrize(
    "case",
    ["unknown_key", "wrong_aud", "expired", "too_long", "wrong_iss", "hs256", "none"],
)
def test_bad_assertions_are_refused(issuer, http, world, case):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    client_id = agent.application.client_id
    aud = f"{issuer}/oauth/token/"
    if case == "unknown_key":
        assertion = helpers.client_assertion(helpers.new_key(), client_id, aud)
    elif case == "wrong_aud":
        assertion = helpers.client_assertion(key, client_id, "https://elsewhere.example.test/token")
    elif case == "expired":
        assertion = helpers.client_assertion(key, client_id, aud, lifetime=-120)
    elif case == "too_long":
        assertion = helpers.client_assertion(key, client_id, aud, lifetime=4 * 3600)
    elif case == "wrong_iss":
        assertion = helpers.client_assertion(key, client_id, aud, claims={"sub": "someone-else"})
    elif case == "hs256":
        secret = jwk.JWK.generate(kty="oct", size=256)
        assertion = helpers.client_assertion(secret, client_id, aud, alg="HS256")
    else:
        import base64

        def b64(data):
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        body = {"iss": client_id, "sub": client_id, "aud": aud, "exp": 9999999999, "jti": "x"}
        assertion = f"{b64({'alg': 'none'})}.{b64(body)}."
    response = http.post(
        f"{issuer}/oauth/token/",
        data={
            "grant_type": "client_credentials",
            "scope": "records.read_own",
            "resource": world.records.audience,
            "client_assertion_type": helpers.ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )
    assert response.status_code in (400, 401)
    assert response.json()["error"] == "invalid_client"
    assert not TokenRecord.objects.exists()
    assert AuditEvent.objects.filter(action="token.refused").count() == 1


def test_replayed_assertion_is_refused(issuer, http, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    assertion = helpers.client_assertion(key, agent.application.client_id, issuer)  # aud = issuer is fine too
    data = {
        "grant_type": "client_credentials",
        "scope": "records.read_own",
        "resource": world.records.audience,
        "client_assertion_type": helpers.ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    assert http.post(f"{issuer}/oauth/token/", data=data).status_code == 200
    replay = http.post(f"{issuer}/oauth/token/", data=data)
    assert replay.json()["error"] == "invalid_client"


def test_assertion_without_kid_and_with_rsa_key(issuer, http, world):
    rsa = helpers.new_key(kty="RSA")
    agent, _ = world.background_agent(key=rsa)
    agent.jwks = {"keys": [{k: v for k, v in m.items() if k != "kid"} for m in agent.jwks["keys"]]}
    agent.save()
    helpers.grant(agent, world.read)
    bare = jwk.JWK(**{k: v for k, v in json.loads(rsa.export_private()).items() if k != "kid"})
    response = token_request(
        http, issuer, agent, bare, resource=world.records.audience, scope="records.read_own", alg="PS256"
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("status", ["suspended", "pending", "retired"])
def test_inactive_agents_get_nothing(issuer, http, world, status):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    agent.status = status
    agent.save()
    response = token_request(
        http, issuer, agent, key, resource=world.records.audience, scope="records.read_own"
    )
    assert response.status_code in (400, 401)
    assert response.json()["error"] in ("invalid_client", "unauthorized_client")
    event = AuditEvent.objects.get(action="token.refused")
    assert event.agent_id == agent.pk
    assert status in json.loads(event.parameters)["reason"]


def test_client_secret_only_where_configured(issuer, http, world):
    secret = "s" * 64
    jwt_agent, _ = world.background_agent(client_secret=secret)
    helpers.grant(jwt_agent, world.read)
    secret_agent, _ = world.background_agent(auth_method="client_secret_basic", client_secret=secret)
    helpers.grant(secret_agent, world.read)
    data = {
        "grant_type": "client_credentials",
        "scope": "records.read_own",
        "resource": world.records.audience,
    }
    refused = http.post(f"{issuer}/oauth/token/", data=data, auth=(jwt_agent.application.client_id, secret))
    assert refused.json()["error"] == "invalid_client"
    accepted = http.post(
        f"{issuer}/oauth/token/", data=data, auth=(secret_agent.application.client_id, secret)
    )
    assert accepted.status_code == 200, accepted.text
    wrong_transport = http.post(
        f"{issuer}/oauth/token/",
        data={**data, "client_id": secret_agent.application.client_id, "client_secret": secret},
    )
    assert wrong_transport.json()["error"] == "invalid_client"
    secret_agent.application.refresh_from_db()
    assert secret_agent.application.client_secret.startswith("gatehouse_sha256$")


def test_interactive_agent_cannot_use_client_credentials(issuer, http, world):
    agent, key = world.interactive_agent()
    response = token_request(
        http, issuer, agent, key, resource=world.records.audience, scope="records.read_own"
    )
    assert response.json()["error"] in ("unauthorized_client", "invalid_client")


def test_errors_are_json_never_html(issuer, http, world):
    assert http.get(f"{issuer}/oauth/token/").json()["error"] == "invalid_request"
    unsupported = http.post(
        f"{issuer}/oauth/token/", data={"grant_type": "password", "username": "a", "password": "b"}
    )
    assert unsupported.json()["error"] == "unsupported_grant_type"
    huge = http.post(
        f"{issuer}/oauth/token/", data={"grant_type": "client_credentials", "client_id": "x" * 5000}
    )
    assert huge.json()["error"] == "invalid_request"
    assert "xxxx" not in huge.text
