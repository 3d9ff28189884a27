"""Client assertions are parsed with a shared, read-only jwcrypto header registry; the header checks hold."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from jwcrypto import jws

from governance.oauth import client_auth
from tests.oauth import helpers

ISSUER = "https://gatehouse.example.test"


def signed(key, claims: dict, **header) -> str:
    """Signed by jwcrypto's JWSCore, which (unlike JWS) lets a test put any header in."""
    protected = json.dumps({"alg": "ES256", "kid": key.thumbprint(), **header})
    out = jws.JWSCore("ES256", key, protected, json.dumps(claims).encode()).sign()
    return f"{out['protected']}.{out['payload'].decode()}.{out['signature']}"


def claims(client_id: str) -> dict:
    now = int(time.time())
    return {"iss": client_id, "sub": client_id, "aud": ISSUER, "exp": now + 60, "jti": uuid.uuid4().hex}


def verify(assertion: str, key):
    return client_auth.verify_assertion(
        assertion, client_id="client-1", jwks=helpers.public_jwks(key), jwks_uri="", audiences={ISSUER}
    )


def test_the_shared_registry_object_has_what_jwcrypto_gives_each_jws():
    ours, theirs = client_auth._AssertionJWS(), jws.JWS()
    assert ours.__dict__.keys() == theirs.__dict__.keys()  # jwcrypto's __init__ has not grown new state
    assert dict(ours.header_registry) == dict(theirs.header_registry)
    assert ours.objects == theirs.objects and ours.allowed_algs == theirs.allowed_algs


def test_an_assertion_verifies_and_leaves_the_shared_registry_alone():
    key = helpers.new_key()
    before = dict(client_auth._AssertionJWS._registry)
    verified = verify(signed(key, claims("client-1")), key)
    assert verified.client_id == "client-1"
    assert dict(client_auth._AssertionJWS._registry) == before


def test_an_unknown_critical_header_is_refused():
    key = helpers.new_key()
    assertion = signed(key, claims("client-1"), crit=["x-gatehouse-test"], **{"x-gatehouse-test": 1})
    with pytest.raises(client_auth.AssertionRejected):
        verify(assertion, key)


def test_a_tampered_assertion_is_refused():
    key = helpers.new_key()
    head, body, signature = signed(key, claims("client-1")).split(".")
    other = signed(key, claims("client-2")).split(".")[1]
    with pytest.raises(client_auth.AssertionRejected):
        verify(f"{head}.{other}.{signature}", key)
