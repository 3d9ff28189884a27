"""DPoP at the token endpoint (client credentials), over real HTTP with real keys: binding, every refusal,
the nonce dance, agents that require DPoP and Bearer agents that do not."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditEvent
from governance.models import TokenRecord
from governance.oauth import jwt_tokens
from governance.oauth.dpop import thumbprint
from tests.oauth import dpop_client, helpers

pytestmark = pytest.mark.django_db(transaction=True)


def token_url(issuer: str) -> str:
    return f"{issuer}/oauth/token/"


def proof(issuer, key, **kwargs) -> str:
    return dpop_client.make_proof("POST", token_url(issuer), key, **kwargs)


def form(world, agent, key, audience: str) -> dict:
    data = {"grant_type": "client_credentials", "scope": "records.read_own"}
    data["resource"] = world.records.audience
    data.update(helpers.assertion_params(key, agent.application.client_id, audience))
    return data


def client_credentials(http, issuer, world, agent, key, *, dpop=None, headers=None):
    data = form(world, agent, key, token_url(issuer))
    sent = list(headers or [])
    if dpop is not None:
        sent.append(("DPoP", dpop))
    return http.post(token_url(issuer), data=data, headers=sent)


def introspect(http, issuer, world, records_key, token):
    url = f"{issuer}/oauth/introspect/"
    data = {"token": token, **helpers.assertion_params(records_key, world.records.application.client_id, url)}
    response = http.post(f"{issuer}/oauth/introspect/", data=data)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def agent(world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    return agent, key


def refusals() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="dpop.proof_refused"))


def assert_refused(response, *, reason: str, agent, error: str = "invalid_dpop_proof", sent: str = ""):
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == error
    assert "no-store" in response.headers["Cache-Control"]
    assert not TokenRecord.objects.exists()
    events = refusals()
    assert len(events) == 1, [e.parameters for e in events]
    parameters = json.loads(events[0].parameters)
    assert parameters["reason"] == reason and parameters["error"] == error
    assert events[0].agent_id == agent.pk and events[0].result == "denied"
    if sent:  # neither the proof nor any part of it is kept
        for part in sent.split("."):
            if part:
                assert part not in events[0].parameters and part not in body["error_description"]
    # One event per refusal: the endpoint's generic token.refused is not written as well.
    assert not AuditEvent.objects.filter(action="token.refused").exists()
    return body


def test_a_proof_binds_the_token_to_the_key(issuer, http, world, agent):
    agent, key = agent
    records_key = world.tool_server_key(world.records)
    dpop_key = dpop_client.new_key()
    jkt = thumbprint(dpop_client.public_jwk(dpop_key))
    response = client_credentials(http, issuer, world, agent, key, dpop=proof(issuer, dpop_key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    claims = jwt_tokens.verify(body["access_token"], audience=world.records.audience)
    assert claims["cnf"] == {"jkt": jkt}
    record = TokenRecord.objects.get(jti=claims["jti"])
    assert record.cnf_jkt == jkt
    described = introspect(http, issuer, world, records_key, body["access_token"])
    assert described["active"] is True
    assert described["token_type"] == "DPoP" and described["cnf"] == {"jkt": jkt}
    issued = AuditEvent.objects.get(action="token.issued")
    assert json.loads(issued.parameters)["cnf_jkt"] == jkt
    assert body["access_token"] not in issued.parameters


def test_a_bearer_agent_still_gets_a_bearer_token(issuer, http, world, agent):
    agent, key = agent
    records_key = world.tool_server_key(world.records)
    response = client_credentials(http, issuer, world, agent, key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in jwt_tokens.verify(body["access_token"])
    assert TokenRecord.objects.get().cnf_jkt == ""
    described = introspect(http, issuer, world, records_key, body["access_token"])
    assert described["token_type"] == "Bearer" and "cnf" not in described


def _bad_proofs(issuer: str) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """name -> (expected reason, DPoP headers); each proof is wrong in exactly one way."""
    key, other = dpop_client.new_key(), dpop_client.new_key()
    url = token_url(issuer)
    swap = ("127.0.0.1", "localhost") if "127.0.0.1" in url else ("localhost", "127.0.0.1")
    host_swapped = url.replace(*swap)
    return {
        "wrong method": ("htm", [("DPoP", dpop_client.make_proof("GET", url, key))]),
        "wrong URL": ("htu", [("DPoP", dpop_client.make_proof("POST", f"{issuer}/oauth/introspect/", key))]),
        "another host": ("htu", [("DPoP", dpop_client.make_proof("POST", host_swapped, key))]),
        "old iat": ("iat", [("DPoP", dpop_client.make_proof("POST", url, key, iat_offset=-600))]),
        "iat in the future": ("iat", [("DPoP", dpop_client.make_proof("POST", url, key, iat_offset=600))]),
        "private key in header": (
            "private_key",
            [("DPoP", dpop_client.make_proof("POST", url, key, embed_private=True))],
        ),
        "alg none": ("alg", [("DPoP", dpop_client.unsigned_proof("POST", url, key))]),
        "HS256": ("alg", [("DPoP", dpop_client.make_proof("POST", url, dpop_client.new_key("oct")))]),
        "signed by another key than the jwk": (
            "signature",
            [("DPoP", dpop_client.make_proof("POST", url, key, header_key=other))],
        ),
        "wrong typ": ("typ", [("DPoP", dpop_client.make_proof("POST", url, key, typ="jwt"))]),
        "no jti": ("claims", [("DPoP", dpop_client.make_proof("POST", url, key, omit=("jti",)))]),
        "two DPoP headers": (
            "multiple",
            [
                ("DPoP", dpop_client.make_proof("POST", url, key)),
                ("DPoP", dpop_client.make_proof("POST", url, key)),
            ],
        ),
        "not a JWT": ("malformed", [("DPoP", "not-a-proof")]),
    }


BAD_PROOFS = [
    "wrong method",
    "wrong URL",
    "another host",
    "old iat",
    "iat in the future",
    "private key in header",
    "alg none",
    "HS256",
    "signed by another key than the jwk",
    "wrong typ",
    "no jti",
    "two DPoP headers",
    "not a JWT",
]


@pytest.mark.parametrize("case", BAD_PROOFS)
def test_each_bad_proof_is_refused_and_audited(issuer, http, world, agent, case):
    agent, key = agent
    reason, headers = _bad_proofs(issuer)[case]
    response = client_credentials(http, issuer, world, agent, key, headers=headers)
    assert_refused(response, reason=reason, agent=agent, sent=headers[0][1])


def test_a_replayed_proof_is_refused(issuer, http, world, agent):
    agent, key = agent
    dpop_key = dpop_client.new_key()
    sent = proof(issuer, dpop_key)
    first = client_credentials(http, issuer, world, agent, key, dpop=sent)
    assert first.status_code == 200, first.text
    TokenRecord.objects.all().delete()
    again = client_credentials(http, issuer, world, agent, key, dpop=sent)
    assert_refused(again, reason="replay", agent=agent, sent=sent)


def test_a_fresh_proof_reusing_a_jti_is_refused(issuer, http, world, agent):
    agent, key = agent
    dpop_key = dpop_client.new_key()
    first = client_credentials(http, issuer, world, agent, key, dpop=proof(issuer, dpop_key, jti="same-jti"))
    assert first.status_code == 200, first.text
    TokenRecord.objects.all().delete()
    again = client_credentials(http, issuer, world, agent, key, dpop=proof(issuer, dpop_key, jti="same-jti"))
    assert_refused(again, reason="replay", agent=agent)


def test_the_proof_must_name_the_issuer_url_not_the_host_it_was_sent_to(issuer, http, world, agent, settings):
    """The htu is derived from GATEHOUSE_ISSUER: a proof for the address actually dialled is refused when
    the issuer says otherwise (a Host header or a proxy cannot widen what a proof may name)."""
    agent, key = agent
    public = "https://gatehouse.example.test"
    settings.GATEHOUSE_ISSUER = public
    dialled = proof(issuer, dpop_client.new_key())
    data = form(world, agent, key, token_url(public))
    response = http.post(token_url(issuer), data=data, headers={"DPoP": dialled})
    assert_refused(response, reason="htu", agent=agent)
    good = dpop_client.make_proof("POST", token_url(public), dpop_client.new_key())
    data = form(world, agent, key, token_url(public))
    answer = http.post(token_url(issuer), data=data, headers={"DPoP": good})
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "DPoP"


def test_nonce_dance(issuer, http, world, agent, settings):
    settings.GATEHOUSE_DPOP_NONCE_REQUIRED = True
    agent, key = agent
    dpop_key = dpop_client.new_key()
    first = client_credentials(http, issuer, world, agent, key, dpop=proof(issuer, dpop_key))
    body = assert_refused(first, reason="nonce", agent=agent, error="use_dpop_nonce")
    assert "nonce" in body["error_description"]
    nonce = first.headers["DPoP-Nonce"]
    assert nonce
    forged = client_credentials(http, issuer, world, agent, key, dpop=proof(issuer, dpop_key, nonce="x" * 43))
    assert forged.status_code == 400 and forged.json()["error"] == "use_dpop_nonce"
    assert forged.headers["DPoP-Nonce"]
    retry = client_credentials(http, issuer, world, agent, key, dpop=proof(issuer, dpop_key, nonce=nonce))
    assert retry.status_code == 200, retry.text
    assert retry.json()["token_type"] == "DPoP"
    assert retry.headers["DPoP-Nonce"]  # a current nonce for the next request


def test_nonces_are_not_asked_by_default(issuer, http, world, agent):
    agent, key = agent
    response = client_credentials(http, issuer, world, agent, key, dpop=proof(issuer, dpop_client.new_key()))
    assert response.status_code == 200, response.text
    assert "DPoP-Nonce" not in response.headers


def test_an_agent_that_requires_dpop_is_refused_without_a_proof(issuer, http, world, agent):
    agent, key = agent
    agent.dpop_bound_tokens_required = True
    agent.save()
    refused = client_credentials(http, issuer, world, agent, key)
    assert_refused(refused, reason="missing", agent=agent)
    assert json.loads(refusals()[0].parameters)["binding"] == "agent_requires_dpop"
    bound = client_credentials(http, issuer, world, agent, key, dpop=proof(issuer, dpop_client.new_key()))
    assert bound.status_code == 200, bound.text
    assert bound.json()["token_type"] == "DPoP"


def test_an_unauthenticated_client_is_refused_before_its_proof_is_looked_at(issuer, http, world, agent):
    agent, _ = agent
    sent = proof(issuer, dpop_client.new_key())
    data = form(world, agent, helpers.new_key(), token_url(issuer))
    response = http.post(token_url(issuer), data=data, headers={"DPoP": sent})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert not refusals()


def test_metadata_advertises_the_proof_algorithms(issuer, http):
    document = http.get(f"{issuer}/.well-known/oauth-authorization-server").json()
    assert document["dpop_signing_alg_values_supported"] == ["ES256", "ES384", "EdDSA", "RS256", "PS256"]
    assert "none" not in document["dpop_signing_alg_values_supported"]
