"""The tool-server helper: a DPoP-bound token issued and introspected over HTTP, then each request shape a
tool server may receive checked with real proofs."""

from __future__ import annotations

import pytest

from governance.oauth.dpop import issue_nonce, thumbprint
from governance.oauth.resource import ResourceRefusal, check_dpop_request
from tests.oauth import dpop_client, helpers

pytestmark = pytest.mark.django_db(transaction=True)

TOOL_URL = "https://records.example.test/mcp/tools/call"


@pytest.fixture
def bound(issuer, http, world):
    """(token, introspection answer, DPoP key) for a client-credentials token bound to a fresh key."""
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    records_key = world.tool_server_key(world.records)
    dpop_key = dpop_client.new_key()
    data = {
        "grant_type": "client_credentials",
        "scope": "records.read_own",
        "resource": world.records.audience,
    }
    data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
    proof = dpop_client.make_proof("POST", f"{issuer}/oauth/token/", dpop_key)
    issued = http.post(f"{issuer}/oauth/token/", data=data, headers={"DPoP": proof})
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    url = f"{issuer}/oauth/introspect/"
    data = {"token": token, **helpers.assertion_params(records_key, world.records.application.client_id, url)}
    described = http.post(url, data=data).json()
    assert described["active"] is True and described["token_type"] == "DPoP"
    return token, described, dpop_key


def check(token, described, proofs, *, scheme="DPoP", method="POST", url=TOOL_URL, **kwargs):
    return check_dpop_request(
        authorization_header=f"{scheme} {token}",
        dpop_headers=proofs,
        method=method,
        url=url,
        introspection_result=described,
        **kwargs,
    )


def refusal(*args, **kwargs) -> ResourceRefusal:
    with pytest.raises(ResourceRefusal) as caught:
        check(*args, **kwargs)
    return caught.value


def test_a_proof_by_the_bound_key_for_this_call_passes(bound):
    token, described, key = bound
    proof = dpop_client.make_proof("POST", TOOL_URL + "?page=2", key, access_token=token)
    accepted = check(token, described, [proof], url=TOOL_URL + "?page=1")  # the query is not compared
    assert accepted.proof.jkt == thumbprint(dpop_client.public_jwk(key)) == described["cnf"]["jkt"]
    assert accepted.claims["sub"] == described["sub"] and accepted.access_token == token
    # The same proof twice is a replay.
    assert refusal(token, described, [proof]).reason == "replay"


@pytest.mark.parametrize(
    "case, reason, error",
    [
        ("proof by another key", "key_mismatch", "invalid_dpop_proof"),
        ("proof for another token", "ath", "invalid_dpop_proof"),
        ("proof without ath", "ath", "invalid_dpop_proof"),
        ("proof for another URL", "htu", "invalid_dpop_proof"),
        ("proof for another method", "htm", "invalid_dpop_proof"),
        ("no proof", "missing", "invalid_dpop_proof"),
        ("old proof", "iat", "invalid_dpop_proof"),
    ],
)
def test_each_bad_request_is_refused_with_a_dpop_challenge(bound, case, reason, error):
    token, described, key = bound
    proofs = {
        "proof by another key": [
            dpop_client.make_proof("POST", TOOL_URL, dpop_client.new_key(), access_token=token)
        ],
        "proof for another token": [dpop_client.make_proof("POST", TOOL_URL, key, access_token=token + "x")],
        "proof without ath": [dpop_client.make_proof("POST", TOOL_URL, key)],
        "proof for another URL": [
            dpop_client.make_proof("POST", "https://calendar.example.test/mcp", key, access_token=token)
        ],
        "proof for another method": [dpop_client.make_proof("GET", TOOL_URL, key, access_token=token)],
        "no proof": [],
        "old proof": [dpop_client.make_proof("POST", TOOL_URL, key, access_token=token, iat_offset=-600)],
    }[case]
    refused = refusal(token, described, proofs)
    assert (refused.reason, refused.error, refused.status_code) == (reason, error, 401)
    challenge = refused.response_headers()["WWW-Authenticate"]
    assert challenge.startswith(f'DPoP error="{error}"') and 'algs="ES256' in challenge
    assert token not in challenge and all(p not in challenge for p in proofs)


def test_a_bound_token_is_refused_as_bearer(bound):
    token, described, key = bound
    proof = dpop_client.make_proof("POST", TOOL_URL, key, access_token=token)
    refused = refusal(token, described, [proof], scheme="Bearer")
    assert (refused.reason, refused.error) == ("bound_as_bearer", "invalid_token")


def test_inactive_unbound_and_missing_tokens_are_refused(bound):
    token, described, key = bound
    proof = lambda: [dpop_client.make_proof("POST", TOOL_URL, key, access_token=token)]  # noqa: E731
    assert refusal(token, {"active": False}, proof()).reason == "inactive"
    unbound = {k: v for k, v in described.items() if k != "cnf"}
    assert refusal(token, unbound, proof()).reason == "not_bound"
    assert refusal(token, {**described, "cnf": {"x5t#S256": "abc"}}, proof()).reason == "not_bound"
    with pytest.raises(ResourceRefusal) as caught:
        check_dpop_request(
            authorization_header=None,
            dpop_headers=proof(),
            method="POST",
            url=TOOL_URL,
            introspection_result=described,
        )
    assert caught.value.reason == "no_token"
    assert refusal("", described, proof()).reason == "no_token"


def test_nonce_dance_at_the_tool_server(bound):
    token, described, key = bound
    first = refusal(
        token,
        described,
        [dpop_client.make_proof("POST", TOOL_URL, key, access_token=token)],
        nonce_required=True,
    )
    assert first.error == "use_dpop_nonce" and first.reason == "nonce"
    nonce = first.response_headers()["DPoP-Nonce"]
    assert nonce
    retry = dpop_client.make_proof("POST", TOOL_URL, key, access_token=token, nonce=nonce)
    assert check(token, described, [retry], nonce_required=True).proof.jkt == described["cnf"]["jkt"]
    current = dpop_client.make_proof("POST", TOOL_URL, key, access_token=token, nonce=issue_nonce())
    assert check(token, described, [current], nonce_required=True)
