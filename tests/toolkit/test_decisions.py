"""The decision API client: what it sends, how it authenticates, and that every failure is a denial."""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
from jwcrypto import jwk, jwt

from gatehouse_toolkit import Decision, DecisionClient, ToolServerSettings, evaluation_request
from tests.toolkit.pdp import StandInPDP

ISSUER = "https://gatehouse.example.test"
RESOURCE = "https://records.example.test/mcp"


@pytest.fixture
def pdp():
    with StandInPDP() as server:
        yield server


def client(pdp, **kwargs) -> DecisionClient:
    kwargs.setdefault("client_id", "records-ts")
    if "private_jwk" not in kwargs:
        kwargs.setdefault("client_secret", "s3cret/with+odd:chars")
    settings = ToolServerSettings(issuer=ISSUER, resource=RESOURCE, decision_endpoint=pdp.url, **kwargs)
    return DecisionClient(settings)


CALL = {
    "token": "tok.en.value",
    "capability": "records.read_own",
    "tool": "read_patient_record",
    "parameters": {"patient_id": "p-001"},
    "method": "post",
    "url": "https://records.example.test/mcp",
    "dpop": "pro.of.jwt",
    "agent_id": "agent-1",
}


def test_the_request_body_is_the_contracts_shape(pdp):
    assert client(pdp).evaluate(**CALL).allowed
    [seen] = pdp.requests
    assert seen["body"] == {
        "subject": {
            "type": "agent",
            "id": "agent-1",
            "properties": {"token": "tok.en.value", "dpop": "pro.of.jwt"},
        },
        "action": {"name": "records.read_own"},
        "resource": {
            "type": "tool",
            "id": "read_patient_record",
            "properties": {"parameters": {"patient_id": "p-001"}},
        },
        "context": {"http": {"method": "POST", "url": "https://records.example.test/mcp"}},
    }
    bare = evaluation_request(token="t", capability="c", tool="x")
    assert (
        "dpop" not in bare["subject"]["properties"] and "id" not in bare["subject"] and "context" not in bare
    )


def test_basic_authentication_form_encodes_the_credentials(pdp):
    client(pdp).evaluate(**CALL)
    scheme, value = pdp.requests[0]["headers"]["Authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == "records-ts:s3cret%2Fwith%2Bodd%3Achars"


def test_private_key_jwt_sends_a_fresh_single_use_assertion_per_call(pdp):
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="ts-1")
    decisions = client(pdp, private_jwk=json.loads(key.export_private()))
    decisions.evaluate(**CALL)
    decisions.evaluate(**CALL)
    seen = []
    for request in pdp.requests:
        scheme, assertion = request["headers"]["Authorization"].split(" ")
        assert scheme == "Bearer"
        token = jwt.JWT(jwt=assertion, key=key, algs=["ES256"])
        header, claims = json.loads(token.header), json.loads(token.claims)
        assert header["kid"] == "ts-1" and header["alg"] == "ES256"
        assert claims["iss"] == claims["sub"] == "records-ts" and claims["aud"] == pdp.url
        assert 0 < claims["exp"] - time.time() <= 300
        seen.append(claims["jti"])
    assert len(set(seen)) == 2


def test_a_denial_is_read_with_its_reason_and_hints(pdp):
    pdp.deny(reason="rate_limited", check="rate", message="Too many calls.", retry_after=7)
    decision = client(pdp).evaluate(**CALL)
    assert not decision.allowed
    assert (decision.reason, decision.check, decision.message, decision.retry_after) == (
        "rate_limited",
        "rate",
        "Too many calls.",
        7,
    )
    assert decision.decision_id == "d-2"


@pytest.mark.parametrize(
    ("status", "answer", "raw"),
    [
        (500, {"decision": True}, None),
        (401, {"error": {"code": "not_authenticated"}}, None),
        (200, None, b"<html>not json</html>"),
        (200, {"decision": "true"}, None),
        (200, {"decision": 1}, None),
        (200, [{"decision": True}], None),
        (200, {"evaluations": [{"decision": True}]}, None),
        (200, None, b'{"decision": true' + b" " * 70000 + b"}"),
    ],
)
def test_anything_but_a_well_formed_allow_is_a_denial(pdp, status, answer, raw):
    pdp.status, pdp.answer, pdp.raw = status, answer, raw
    decision = client(pdp).evaluate(**CALL)
    assert not decision.allowed and decision.reason == "unavailable" and decision.check == "service"


def test_hostile_context_values_are_dropped_not_trusted():
    decision = Decision.from_answer(
        {
            "decision": False,
            "context": {
                "reason": "x" * 500,
                "message": {"html": 1},
                "retry_after": -3,
                "max_age": True,
                "check": "anything",
                "acr_values": ["urn:a", 5, "urn:b"],
            },
        }
    )
    assert decision.reason == "denied" and decision.message == "The call is not allowed."
    assert decision.retry_after is None and decision.max_age is None and decision.check is None
    assert decision.acr_values == "urn:a urn:b"


def test_connection_refused_is_a_denial():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ToolServerSettings(
        issuer=ISSUER, resource=RESOURCE, decision_endpoint=f"http://127.0.0.1:{port}/access/v1/evaluation"
    )
    decision = DecisionClient(settings).evaluate(**CALL)
    assert decision.reason == "unavailable"


def test_a_slow_answer_is_a_denial_within_the_timeout(pdp):
    pdp.delay = 2.0
    decisions = client(pdp, timeout=0.3)
    started = time.monotonic()
    assert decisions.evaluate(**CALL).reason == "unavailable"
    assert time.monotonic() - started < 1.5


def test_the_async_client_fails_closed_too(pdp):
    import anyio

    pdp.status = 503
    assert anyio.run(lambda: client(pdp).aevaluate(**CALL)).reason == "unavailable"
    pdp.status = 200
    assert anyio.run(lambda: client(pdp).aevaluate(**CALL)).allowed
