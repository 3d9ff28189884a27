"""DPoP with the authorization code and refresh grants, over real HTTP: codes bound by ``dpop_jkt``
(RFC 9449 §10) and public clients' refresh tokens bound to their key (§5)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from audit.models import AuditEvent
from governance.models import RefreshTokenBinding, TokenRecord
from governance.oauth import jwt_tokens
from governance.oauth.dpop import thumbprint
from tests.oauth import dpop_client, helpers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_in(http, world):
    helpers.login(http, world.member)
    return http


def token_url(issuer: str) -> str:
    return f"{issuer}/oauth/token/"


def jkt_of(key) -> str:
    return thumbprint(dpop_client.public_jwk(key))


def authorize(http, issuer, world, agent, *, dpop_jkt: str | None = None):
    """The consent round trip; the form is posted to the bare endpoint, so dpop_jkt travels in the form."""
    verifier, challenge = helpers.pkce_pair()
    params = {
        "response_type": "code",
        "client_id": agent.application.client_id,
        "redirect_uri": helpers.REDIRECT_URI,
        "scope": "records.read_own",
        "state": "xyz",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": world.records.audience,
    }
    if dpop_jkt is not None:
        params["dpop_jkt"] = dpop_jkt
    page = http.get(f"{issuer}/oauth/authorize/?{urlencode(params)}")
    if page.status_code != 200:
        return page, verifier
    parser = helpers._FormParser()
    parser.feed(page.text)
    form = {**parser.fields, "allow": "Authorize"}
    answer = http.post(
        f"{issuer}/oauth/authorize/", data=form, headers={"Referer": f"{issuer}/oauth/authorize/"}
    )
    return answer, verifier


def client_auth(agent, key, issuer) -> dict:
    if key is None:  # a public client
        return {"client_id": agent.application.client_id}
    return helpers.assertion_params(key, agent.application.client_id, token_url(issuer))


def exchange(http, issuer, agent, key, *, code, verifier, dpop_key=None, proof=None):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": helpers.REDIRECT_URI,
        "code_verifier": verifier,
        **client_auth(agent, key, issuer),
    }
    if proof is None and dpop_key is not None:
        proof = dpop_client.make_proof("POST", token_url(issuer), dpop_key)
    return http.post(token_url(issuer), data=data, headers={"DPoP": proof} if proof else {})


def refresh(http, issuer, agent, key, refresh_token, *, dpop_key=None):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **client_auth(agent, key, issuer)}
    headers = {}
    if dpop_key is not None:
        headers["DPoP"] = dpop_client.make_proof("POST", token_url(issuer), dpop_key)
    return http.post(token_url(issuer), data=data, headers=headers)


def refusal_parameters() -> list[dict]:
    return [json.loads(e.parameters) for e in AuditEvent.objects.filter(action="dpop.proof_refused")]


def test_a_code_bound_by_dpop_jkt_needs_a_proof_by_that_key(issuer, signed_in, world):
    agent, key = world.interactive_agent()
    helpers.grant(agent, world.read, world.member)
    dpop_key, other = dpop_client.new_key(), dpop_client.new_key()
    answer, verifier = authorize(signed_in, issuer, world, agent, dpop_jkt=jkt_of(dpop_key))
    code = helpers.code_from(answer)["code"]

    without = exchange(signed_in, issuer, agent, key, code=code, verifier=verifier)
    assert without.status_code == 400 and without.json()["error"] == "invalid_dpop_proof"
    wrong_key = exchange(signed_in, issuer, agent, key, code=code, verifier=verifier, dpop_key=other)
    assert wrong_key.status_code == 400 and wrong_key.json()["error"] == "invalid_dpop_proof"
    reasons = [(p["reason"], p["binding"]) for p in refusal_parameters()]
    assert sorted(reasons) == [("key_mismatch", "authorization_code"), ("missing", "authorization_code")]
    events = AuditEvent.objects.filter(action="dpop.proof_refused")
    assert all(e.agent_id == agent.pk and e.on_behalf_of_id == world.member.pk for e in events)
    assert not TokenRecord.objects.exists()

    # The refusals did not use the code up: the holder of the bound key redeems it.
    bound = exchange(signed_in, issuer, agent, key, code=code, verifier=verifier, dpop_key=dpop_key)
    assert bound.status_code == 200, bound.text
    body = bound.json()
    assert body["token_type"] == "DPoP"
    assert jwt_tokens.verify(body["access_token"])["cnf"] == {"jkt": jkt_of(dpop_key)}
    assert TokenRecord.objects.get().user == world.member


def test_a_malformed_dpop_jkt_is_refused_at_the_authorization_endpoint(issuer, signed_in, world):
    agent, _ = world.interactive_agent()
    helpers.grant(agent, world.read, world.member)
    answer, _ = authorize(signed_in, issuer, world, agent, dpop_jkt="not a thumbprint")
    query = helpers.code_from(answer)
    assert query["error"] == "invalid_request" and "code" not in query


def test_a_code_without_dpop_jkt_is_bound_to_whatever_key_proves_at_the_exchange(issuer, signed_in, world):
    agent, key = world.interactive_agent()
    helpers.grant(agent, world.read, world.member)
    answer, verifier = authorize(signed_in, issuer, world, agent)
    dpop_key = dpop_client.new_key("Ed25519")
    response = exchange(
        signed_in,
        issuer,
        agent,
        key,
        code=helpers.code_from(answer)["code"],
        verifier=verifier,
        dpop_key=dpop_key,
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    assert TokenRecord.objects.get().cnf_jkt == jkt_of(dpop_key)


def test_a_bad_proof_at_the_code_exchange_is_refused(issuer, signed_in, world):
    agent, key = world.interactive_agent()
    helpers.grant(agent, world.read, world.member)
    answer, verifier = authorize(signed_in, issuer, world, agent)
    stale = dpop_client.make_proof("POST", token_url(issuer), dpop_client.new_key(), iat_offset=-3600)
    code = helpers.code_from(answer)["code"]
    response = exchange(signed_in, issuer, agent, key, code=code, verifier=verifier, proof=stale)
    assert response.status_code == 400 and response.json()["error"] == "invalid_dpop_proof"
    assert [p["reason"] for p in refusal_parameters()] == ["iat"]


def test_a_public_clients_refresh_token_is_bound_to_its_key(issuer, signed_in, world):
    agent, _ = world.interactive_agent(auth_method="none")
    helpers.grant(agent, world.read, world.member)
    dpop_key, thief = dpop_client.new_key(), dpop_client.new_key()
    answer, verifier = authorize(signed_in, issuer, world, agent)
    first = exchange(
        signed_in,
        issuer,
        agent,
        None,
        code=helpers.code_from(answer)["code"],
        verifier=verifier,
        dpop_key=dpop_key,
    )
    assert first.status_code == 200, first.text
    tokens = first.json()
    assert tokens["token_type"] == "DPoP" and tokens["refresh_token"]
    assert RefreshTokenBinding.objects.get().jkt == jkt_of(dpop_key)

    # A stolen refresh token is useless without the key, and the attempt is on record.
    no_proof = refresh(signed_in, issuer, agent, None, tokens["refresh_token"])
    assert no_proof.status_code == 400 and no_proof.json()["error"] == "invalid_dpop_proof"
    stolen = refresh(signed_in, issuer, agent, None, tokens["refresh_token"], dpop_key=thief)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_dpop_proof"
    parameters = refusal_parameters()
    assert sorted(p["reason"] for p in parameters) == ["key_mismatch", "missing"]
    assert all(p["binding"] == "refresh_token" and p["token_family"] for p in parameters)
    assert all(tokens["refresh_token"] not in json.dumps(p) for p in parameters)

    # The holder of the key refreshes; the rotated refresh token keeps the binding.
    second = refresh(signed_in, issuer, agent, None, tokens["refresh_token"], dpop_key=dpop_key)
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["token_type"] == "DPoP" and rotated["refresh_token"] != tokens["refresh_token"]
    assert jwt_tokens.verify(rotated["access_token"])["cnf"] == {"jkt": jkt_of(dpop_key)}
    again = refresh(signed_in, issuer, agent, None, rotated["refresh_token"], dpop_key=thief)
    assert again.status_code == 400 and again.json()["error"] == "invalid_dpop_proof"


def test_a_public_clients_bearer_refresh_token_stays_unbound(issuer, signed_in, world):
    agent, _ = world.interactive_agent(auth_method="none")
    helpers.grant(agent, world.read, world.member)
    answer, verifier = authorize(signed_in, issuer, world, agent)
    first = exchange(
        signed_in, issuer, agent, None, code=helpers.code_from(answer)["code"], verifier=verifier
    )
    assert first.status_code == 200, first.text
    assert first.json()["token_type"] == "Bearer"
    assert not RefreshTokenBinding.objects.exists()
    second = refresh(signed_in, issuer, agent, None, first.json()["refresh_token"])
    assert second.status_code == 200 and second.json()["token_type"] == "Bearer"


def test_a_confidential_clients_refresh_token_is_not_bound(issuer, signed_in, world):
    """RFC 9449 §5: private_key_jwt already constrains the refresh token; the new access token is bound to
    the key of the refresh request's proof, or is Bearer without one."""
    agent, key = world.interactive_agent()
    helpers.grant(agent, world.read, world.member)
    answer, verifier = authorize(signed_in, issuer, world, agent)
    first = exchange(
        signed_in,
        issuer,
        agent,
        key,
        code=helpers.code_from(answer)["code"],
        verifier=verifier,
        dpop_key=dpop_client.new_key(),
    )
    assert first.status_code == 200 and first.json()["token_type"] == "DPoP"
    assert not RefreshTokenBinding.objects.exists()
    plain = refresh(signed_in, issuer, agent, key, first.json()["refresh_token"])
    assert plain.status_code == 200, plain.text
    assert plain.json()["token_type"] == "Bearer"
    new_key = dpop_client.new_key()
    bound = refresh(signed_in, issuer, agent, key, plain.json()["refresh_token"], dpop_key=new_key)
    assert bound.status_code == 200 and bound.json()["token_type"] == "DPoP"
    assert jwt_tokens.verify(bound.json()["access_token"])["cnf"] == {"jkt": jkt_of(new_key)}


def test_an_agent_that_requires_dpop_cannot_refresh_without_a_proof(issuer, signed_in, world):
    agent, key = world.interactive_agent()
    agent.dpop_bound_tokens_required = True
    agent.save()
    helpers.grant(agent, world.read, world.member)
    dpop_key = dpop_client.new_key()
    answer, verifier = authorize(signed_in, issuer, world, agent)
    code = helpers.code_from(answer)["code"]
    first = exchange(signed_in, issuer, agent, key, code=code, verifier=verifier, dpop_key=dpop_key)
    assert first.status_code == 200, first.text
    refused = refresh(signed_in, issuer, agent, key, first.json()["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_dpop_proof"
    assert refusal_parameters()[0]["binding"] == "agent_requires_dpop"
