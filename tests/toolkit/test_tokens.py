"""Offline verification of access tokens: real tokens from a live Gatehouse, and every way to forge one."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from jwcrypto import jwk, jws
from jwcrypto.common import base64url_encode

from audit.services import SYSTEM
from gatehouse_toolkit import AccessTokenVerifier, JWKSCache, TokenRejected, ToolServerSettings
from governance.oauth import signing_keys
from governance.services.signing_keys import signing_key_rotate
from tests.toolkit.conftest import ISSUER, RESOURCE, Clock


def rejected(guard, token) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        guard.tokens.verify(token)
    return caught.value


def b64(value: dict) -> str:
    return base64url_encode(json.dumps(value).encode())


def parts(token: str) -> tuple[dict, dict, str]:
    header, payload, signature = token.split(".")
    decode = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))  # noqa: E731
    return decode(header), decode(payload), signature


# --- real tokens, real JWKS over HTTP -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_real_token_verifies_with_keys_found_through_rfc8414_discovery(live):
    settings = live.settings()
    verifier = AccessTokenVerifier(settings)
    token = live.token()
    verified = verifier.verify(token)
    assert verified.client_id == live.agent.application.client_id == verified.subject
    assert verified.scopes == ("records.read_own",) and verified.jkt is None
    assert verified.claims["aud"] == settings.resource and verified.expires_at > time.time()
    # Many verifications, one fetch of the metadata-named JWKS.
    for _ in range(20):
        verifier.verify(live.token() if _ % 10 == 0 else token)
    assert verifier.keys.fetches == 1


@pytest.mark.django_db(transaction=True)
def test_a_token_for_one_tool_server_is_refused_by_another(live):
    token = live.token()
    calendar = ToolServerSettings(issuer=live.issuer, resource=live.world.calendar.audience)
    assert rejected_by(AccessTokenVerifier(calendar), token).code == "wrong_audience"
    assert AccessTokenVerifier(live.settings()).verify(token)


def rejected_by(verifier, token) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        verifier.verify(token)
    return caught.value


@pytest.mark.django_db(transaction=True)
def test_unknown_kid_refreshes_once_then_a_rotated_key_is_accepted(live):
    clock = Clock(0)
    settings = live.settings(jwks_min_refresh=30)
    keys = JWKSCache(settings, clock=clock)
    verifier = AccessTokenVerifier(settings, keys=keys)
    first = live.token()
    verifier.verify(first)
    assert keys.fetches == 1
    # Gatehouse rotates: the new key is published and signs at once.  The first token with the new kid
    # makes the cache fetch again (the last fetch is older than the minimum interval).
    clock.now += 31
    signing_key_rotate(actor=SYSTEM, now=True)
    fresh = live.token()
    assert parts(fresh)[0]["kid"] != parts(first)[0]["kid"]
    verifier.verify(fresh)
    assert keys.fetches == 2
    verifier.verify(first)  # the old key is still published until its tokens have expired
    assert keys.fetches == 2


@pytest.mark.django_db(transaction=True)
def test_forged_kids_cause_one_fetch_per_interval_never_a_storm(live):
    clock = Clock(0)
    settings = live.settings(jwks_min_refresh=30)
    keys = JWKSCache(settings, clock=clock)
    verifier = AccessTokenVerifier(settings, keys=keys)
    verifier.verify(live.token())
    header, payload, signature = live.token().split(".")
    real_header = parts(live.token())[0]

    def forged(kid: str) -> str:
        return f"{b64({**real_header, 'kid': kid})}.{payload}.{signature}"

    clock.now += 31
    for _ in range(200):
        assert rejected_by(verifier, forged(uuid.uuid4().hex)).reason == "unknown_key"
    assert keys.fetches == 2  # the first unknown kid refreshed once; the other 199 cost nothing
    clock.now += 10
    rejected_by(verifier, forged("still-unknown"))
    assert keys.fetches == 2
    clock.now += 30
    rejected_by(verifier, forged("later"))
    assert keys.fetches == 3


@pytest.mark.django_db(transaction=True)
def test_keys_come_only_from_the_configured_issuer(live):
    # Same server, but configured under another name: the metadata's issuer does not match, so no keys.
    alias = (
        live.issuer.replace("localhost", "127.0.0.1")
        if "localhost" in live.issuer
        else live.issuer.replace("127.0.0.1", "localhost")
    )
    assert alias != live.issuer
    settings = ToolServerSettings(issuer=alias, resource=live.world.records.audience)
    assert rejected_by(AccessTokenVerifier(settings), live.token()).reason in {"unknown_key", "issuer"}
    keys = JWKSCache(settings)
    assert keys.key("anything") is None and keys.fetches == 1


# --- forged and tampered tokens (signed with Gatehouse's real key unless the test says otherwise) -------


def test_a_good_token_passes(offline_guard, signed):
    verified = offline_guard.tokens.verify(signed())
    assert verified.subject == "user-7" and verified.client_id == "agent-1"


@pytest.mark.parametrize(
    ("overrides", "reason", "code"),
    [
        ({"issuer": "https://evil.example.test"}, "issuer", "invalid_token"),
        ({"issuer": ISSUER + "/"}, "issuer", "invalid_token"),
        ({"audience": "https://calendar.example.test/mcp"}, "audience", "wrong_audience"),
        ({"audience": RESOURCE + "/"}, "audience", "wrong_audience"),
        ({"subject": ""}, "claims", "invalid_token"),
        ({"client_id": ""}, "claims", "invalid_token"),
        ({"jti": ""}, "claims", "invalid_token"),
        ({"extra": {"scope": 7}}, "claims", "invalid_token"),
        ({"extra": {"cnf": {"jkt": 5}}}, "claims", "invalid_token"),
        ({"extra": {"exp": "tomorrow"}}, "claims", "invalid_token"),
        ({"extra": {"iat": True}}, "claims", "invalid_token"),
        ({"extra": {"nbf": int(time.time()) + 3600}}, "not_yet_valid", "invalid_token"),
        ({"extra": {"aud": [RESOURCE + "x", 5]}}, "audience", "wrong_audience"),
    ],
)
def test_claims_that_do_not_fit_are_refused(offline_guard, signed, overrides, reason, code):
    failure = rejected(offline_guard, signed(**overrides))
    assert (failure.reason, failure.code) == (reason, code)


def test_an_audience_list_holding_this_resource_passes(offline_guard, signed):
    assert offline_guard.tokens.verify(signed(extra={"aud": ["https://other.test", RESOURCE]}))


def test_expiry_with_a_small_leeway(offline_guard, signed):
    now = int(time.time())
    expired = signed(expires_at=datetime.fromtimestamp(now - 11, tz=UTC))
    assert rejected(offline_guard, expired).code == "token_expired"
    just_expired = signed(expires_at=datetime.fromtimestamp(now - 5, tz=UTC))
    assert offline_guard.tokens.verify(just_expired)  # within the 10 s leeway
    future = signed(issued_at=datetime.fromtimestamp(now + 60, tz=UTC))
    assert rejected(offline_guard, future).reason == "not_yet_valid"


def test_a_changed_payload_or_signature_is_refused(offline_guard, signed):
    header, payload, signature = signed().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    more = b64({**claims, "scope": "records.read_own records.write_own"})
    assert rejected(offline_guard, f"{header}.{more}.{signature}").reason == "signature"
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert rejected(offline_guard, f"{header}.{payload}.{flipped}").reason == "signature"
    assert rejected(offline_guard, f"{header}.{payload}.").reason == "signature"


def test_a_token_signed_by_another_key_under_gatehouses_kid_is_refused(offline_guard, signed):
    header, payload, _ = parts(signed())
    attacker = jwk.JWK.generate(kty="EC", crv="P-256")
    token = jws.JWS(json.dumps(payload).encode())
    token.add_signature(attacker, alg="ES256", protected=json.dumps(header))
    assert rejected(offline_guard, token.serialize(compact=True)).reason == "signature"


def test_alg_none_is_refused(offline_guard, signed):
    header, payload, _ = parts(signed())
    assert rejected(offline_guard, f"{b64({**header, 'alg': 'none'})}.{b64(payload)}.").reason == "alg"


def test_hs256_keyed_with_the_public_key_is_refused(offline_guard, signed):
    """The classic key confusion: sign HS256 with the published public key as the HMAC secret."""
    header, payload, _ = parts(signed())
    published = next(k for k in signing_keys.jwks()["keys"] if k["kid"] == header["kid"])
    public = jwk.JWK(**published)
    for secret in (public.export_to_pem(), json.dumps(published).encode(), public.export_public().encode()):
        hmac_key = jwk.JWK(kty="oct", k=base64url_encode(secret))
        forged = jws.JWS(json.dumps(payload).encode())
        forged.add_signature(hmac_key, alg="HS256", protected=json.dumps({**header, "alg": "HS256"}))
        assert rejected(offline_guard, forged.serialize(compact=True)).reason == "alg"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"typ": "JWT"}, "typ"),
        ({"typ": None}, "typ"),
        ({"kid": None}, "unknown_key"),
        ({"kid": "nobody"}, "unknown_key"),
        ({"crit": ["exp"]}, "malformed"),
        ({"b64": False}, "malformed"),
        ({"alg": "RS256"}, "alg"),  # the published key says ES256
    ],
)
def test_header_shapes_are_refused(offline_guard, signed, change, reason):
    header, payload, signature = signed().split(".")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    decoded.update(change)
    decoded = {k: v for k, v in decoded.items() if v is not None}
    assert rejected(offline_guard, f"{b64(decoded)}.{payload}.{signature}").reason == reason


def test_application_at_jwt_typ_is_accepted(offline_guard, signed):
    """RFC 9068 §4 allows both spellings; here it is re-signed with the real key through the server path."""
    header, payload, _ = parts(signed())
    record, key = signing_keys.signing_key()
    token = jws.JWS(json.dumps(payload).encode())
    token.add_signature(key, alg=record.alg, protected=json.dumps({**header, "typ": "application/at+jwt"}))
    assert offline_guard.tokens.verify(token.serialize(compact=True))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "x" * 9000,
        "eyJ\x00.e30.",
        "ünïcode.e30.sig",
        "W10.W10.AA",  # JSON arrays, not objects
        b64({"typ": "at+jwt", "alg": "ES256", "kid": "k"}) + "." + "bm90IGpzb24" + ".AA",
        b64({"typ": "at+jwt", "typ ": 1}).replace("IiA", "Ig") + ".e30.AA",
    ],
)
def test_hostile_input_is_refused_without_an_error(offline_guard, token):
    assert rejected(offline_guard, token).code == "invalid_token"


def test_duplicate_header_members_are_refused(offline_guard, signed):
    header, payload, signature = signed().split(".")
    text = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)).decode()
    doubled = base64url_encode(text[:-1] + ',"typ":"at+jwt"}')
    assert rejected(offline_guard, f"{doubled}.{payload}.{signature}").reason == "malformed"


def test_settings_refuse_symmetric_algorithms_and_half_credentials():
    with pytest.raises(ValueError):
        ToolServerSettings(issuer=ISSUER, resource=RESOURCE, token_algs=("ES256", "HS256"))
    with pytest.raises(ValueError):
        ToolServerSettings(issuer=ISSUER, resource=RESOURCE, dpop_algs=("none",))
    with pytest.raises(ValueError):
        ToolServerSettings(issuer=ISSUER, resource=RESOURCE, client_secret="s")
    with pytest.raises(ValueError):
        ToolServerSettings(issuer=ISSUER, resource=RESOURCE + "#frag")
