"""RFC 9449 §4.3: every check of a DPoP proof, with real keys, the real replay cache and real nonces."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import pytest
import redis
from jwcrypto.common import base64url_encode

from governance.oauth import dpop
from governance.oauth.dpop import DPOP_SIGNING_ALGS, DPoPError, issue_nonce, thumbprint, verify_proof
from tests.oauth.dpop_client import make_proof, new_key, public_jwk, unsigned_proof

TOKEN_URL = "https://gatehouse.example.test/oauth/token"
RESOURCE_URL = "https://records.example.test/mcp"
FIXED_DESCRIPTIONS = {description for _, description in dpop._FAILURES.values()}


def refused(reason: str, **kwargs) -> DPoPError:
    with pytest.raises(DPoPError) as caught:
        verify_proof(**kwargs)
    assert caught.value.reason == reason
    assert caught.value.description in FIXED_DESCRIPTIONS
    return caught.value


@pytest.fixture(scope="module")
def key():
    return new_key("EC")


def redis_available() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["configured", "redis"])
def replay_cache(request, settings):
    """The configured cache (locmem by default, Redis when REDIS_URL is set) and, explicitly, Redis."""
    if request.param == "redis":
        if not redis_available():
            pytest.skip("Redis is not running on 127.0.0.1:6379")
        settings.CACHES = {
            **settings.CACHES,
            "dpop_test_redis": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:6379/15",
            },
        }
        settings.GATEHOUSE_DPOP_REPLAY_CACHE = "dpop_test_redis"
    return request.param


# --- accepted proofs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "alg"),
    [("EC", "ES256"), ("EC384", "ES384"), ("Ed25519", "EdDSA"), ("RSA", "RS256"), ("RSA", "PS256")],
)
def test_a_good_proof_is_accepted_and_names_its_key(kind, alg):
    signer = new_key(kind)
    proof = make_proof("POST", TOKEN_URL, signer, alg=alg, jti="unique-1-" + uuid.uuid4().hex)

    result = verify_proof(headers=[proof], method="POST", url=TOKEN_URL)

    assert result.jkt == thumbprint(public_jwk(signer)) == signer.thumbprint()
    assert result.jti.startswith("unique-1-")
    assert abs(result.iat - time.time()) < 60
    assert result.public_jwk == public_jwk(signer)
    assert "d" not in result.public_jwk


def test_thumbprint_is_rfc7638_sha256_of_the_required_members_in_order(key):
    members = public_jwk(key)
    canonical = json.dumps({name: members[name] for name in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    expected = base64url_encode(hashlib.sha256(canonical.encode()).digest())
    assert thumbprint({**members, "kid": "ignored", "use": "sig"}) == expected


def test_only_asymmetric_algorithms_are_advertised():
    assert set(DPOP_SIGNING_ALGS) == {"ES256", "ES384", "EdDSA", "RS256", "PS256"}


# --- the header ------------------------------------------------------------------------------------------


def test_no_header_is_refused():
    error = refused("missing", headers=[], method="POST", url=TOKEN_URL)
    assert error.error == "invalid_dpop_proof"
    refused("missing", headers=[""], method="POST", url=TOKEN_URL)


def test_two_headers_are_refused_even_when_both_are_good(key):
    first, second = make_proof("POST", TOKEN_URL, key), make_proof("POST", TOKEN_URL, key)
    refused("multiple", headers=[first, second], method="POST", url=TOKEN_URL)
    refused("multiple", headers=[f"{first}, {second}"], method="POST", url=TOKEN_URL)
    # Neither proof was consumed by the refusal.
    assert verify_proof(headers=[first], method="POST", url=TOKEN_URL)


def test_an_oversized_header_is_refused(key):
    proof = make_proof("POST", TOKEN_URL, key, claims={"pad": "x" * 9000})
    refused("too_large", headers=[proof], method="POST", url=TOKEN_URL)


@pytest.mark.parametrize(
    "value",
    [
        "not-a-jwt",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        '{"payload": "e30", "protected": "e30", "signature": "AA"}',  # JWS JSON serialization
        base64url_encode(b"[1]") + ".e30.AA",  # header is not an object
        base64url_encode(b'{"typ": "dpop+jwt", "typ": "jwt"}') + ".e30.AA",  # duplicate member
        base64url_encode(b"\xff\xfe") + ".e30.AA",  # not UTF-8
    ],
)
def test_a_malformed_jwt_is_refused(value):
    refused("malformed", headers=[value], method="POST", url=TOKEN_URL)


@pytest.mark.parametrize("typ", ["jwt", "JWT", "at+jwt", "DPOP+JWT", None])
def test_the_wrong_typ_is_refused(key, typ):
    refused("typ", headers=[make_proof("POST", TOKEN_URL, key, typ=typ)], method="POST", url=TOKEN_URL)


def test_alg_none_is_refused(key):
    refused("alg", headers=[unsigned_proof("POST", TOKEN_URL, key)], method="POST", url=TOKEN_URL)
    refused("alg", headers=[unsigned_proof("POST", TOKEN_URL, key, alg="None")], method="POST", url=TOKEN_URL)


def test_hs256_with_a_symmetric_jwk_is_refused():
    proof = make_proof("POST", TOKEN_URL, new_key("oct"), alg="HS256")
    refused("alg", headers=[proof], method="POST", url=TOKEN_URL)


def test_an_asymmetric_alg_names_a_symmetric_jwk(key):
    proof = make_proof("POST", TOKEN_URL, key, alg="ES256", header_key=new_key("oct"))
    refused("private_key", headers=[proof], method="POST", url=TOKEN_URL)


@pytest.mark.parametrize("alg", ["ES512", "RS512", "HS512", "Ed25519"])
def test_algorithms_outside_the_allow_list_are_refused(alg):
    forged = make_proof("POST", TOKEN_URL, new_key("EC"))
    header, payload, signature = forged.split(".")
    header_json = json.loads(dpop.base64url_decode(header))
    header_json["alg"] = alg
    relabelled = f"{base64url_encode(json.dumps(header_json).encode())}.{payload}.{signature}"
    refused("alg", headers=[relabelled], method="POST", url=TOKEN_URL)


@pytest.mark.parametrize("kind", ["EC", "Ed25519", "RSA"])
def test_a_private_key_in_the_header_is_refused(kind):
    signer = new_key(kind)
    proof = make_proof("POST", TOKEN_URL, signer, embed_private=True)
    refused("private_key", headers=[proof], method="POST", url=TOKEN_URL)


def test_a_jwk_that_does_not_fit_the_alg_is_refused(key):
    proof = make_proof("POST", TOKEN_URL, key, alg="ES384")
    refused("jwk", headers=[proof], method="POST", url=TOKEN_URL)
    rsa_as_ec = make_proof("POST", TOKEN_URL, key, alg="ES256", header_key=new_key("RSA"))
    refused("jwk", headers=[rsa_as_ec], method="POST", url=TOKEN_URL)


def test_a_short_rsa_key_is_refused():
    from jwcrypto import jwk

    weak = jwk.JWK.generate(kty="RSA", size=1024)
    proof = make_proof("POST", TOKEN_URL, weak, alg="RS256")
    refused("jwk", headers=[proof], method="POST", url=TOKEN_URL)


def test_a_signature_by_another_key_than_the_embedded_jwk_is_refused(key):
    attacker, victim = new_key("EC"), key
    proof = make_proof("POST", TOKEN_URL, attacker, header_key=victim)
    refused("signature", headers=[proof], method="POST", url=TOKEN_URL)


def test_an_empty_signature_with_an_asymmetric_alg_is_refused(key):
    header, payload, _signature = make_proof("POST", TOKEN_URL, key).split(".")
    refused("signature", headers=[f"{header}.{payload}."], method="POST", url=TOKEN_URL)


def test_a_payload_changed_after_signing_is_refused(key):
    header, _payload, signature = make_proof("GET", TOKEN_URL, key).split(".")
    payload = {"jti": uuid.uuid4().hex, "htm": "POST", "htu": TOKEN_URL, "iat": int(time.time())}
    tampered = f"{header}.{base64url_encode(json.dumps(payload).encode())}.{signature}"
    refused("signature", headers=[tampered], method="POST", url=TOKEN_URL)


# --- claims ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_a_missing_claim_is_refused(key, claim):
    proof = make_proof("POST", TOKEN_URL, key, omit=(claim,))
    refused("claims", headers=[proof], method="POST", url=TOKEN_URL)


@pytest.mark.parametrize(
    "claims",
    [
        {"jti": "j" * 257},
        {"jti": ""},
        {"jti": 7},
        {"iat": "now"},
        {"iat": True},
        {"iat": 10**400},
        {"iat": -5},
        {"htm": ["POST"]},
        {"nonce": 12},
        {"ath": ""},
        {"htu": "https://x.test/" + "a" * 2100},
    ],
)
def test_a_claim_of_the_wrong_type_or_size_is_refused(key, claims):
    proof = make_proof("POST", TOKEN_URL, key, claims=claims)
    refused("claims", headers=[proof], method="POST", url=TOKEN_URL)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(key, constant):
    header, _payload, signature = make_proof("POST", TOKEN_URL, key).split(".")
    raw = f'{{"jti": "x", "htm": "POST", "htu": "{TOKEN_URL}", "iat": {constant}}}'
    proof = f"{header}.{base64url_encode(raw.encode())}.{signature}"
    with pytest.raises(DPoPError) as caught:
        verify_proof(headers=[proof], method="POST", url=TOKEN_URL)
    assert caught.value.error == "invalid_dpop_proof"


def test_the_wrong_method_is_refused_and_does_not_burn_the_jti(key):
    proof = make_proof("POST", TOKEN_URL, key)
    refused("htm", headers=[proof], method="GET", url=TOKEN_URL)
    refused("htm", headers=[make_proof("post", TOKEN_URL, key)], method="POST", url=TOKEN_URL)
    assert verify_proof(headers=[proof], method="POST", url=TOKEN_URL)


@pytest.mark.parametrize(
    "request_url",
    [
        "https://gatehouse.example.test/oauth/revoke",  # other path
        "https://evil.example.test/oauth/token",  # other host
        "http://gatehouse.example.test/oauth/token",  # other scheme
        "https://gatehouse.example.test:8443/oauth/token",  # other port
        "https://gatehouse.example.test/oauth/token/",  # trailing slash is another resource
        "https://gatehouse.example.test/OAUTH/token",  # paths are case-sensitive
    ],
)
def test_the_wrong_uri_is_refused(key, request_url):
    refused("htu", headers=[make_proof("POST", TOKEN_URL, key)], method="POST", url=request_url)


@pytest.mark.parametrize(
    ("htu", "request_url"),
    [
        (TOKEN_URL, TOKEN_URL + "?client_id=abc&x=1"),  # query ignored
        (TOKEN_URL + "?other=1#frag", TOKEN_URL),  # query and fragment in the claim ignored
        ("https://Gatehouse.EXAMPLE.test:443/oauth/token", TOKEN_URL),  # host case, default port
        ("HTTPS://gatehouse.example.test/oauth/token", "https://gatehouse.example.test:443/oauth/token"),
        ("http://127.0.0.1:80/oauth/token", "http://127.0.0.1/oauth/token"),
        ("https://gatehouse.example.test", "https://gatehouse.example.test/"),  # empty path is "/"
        ("https://gatehouse.example.test/oauth/%7etoken", "https://gatehouse.example.test/oauth/~token"),
        ("https://gatehouse.example.test/a/%2f", "https://gatehouse.example.test/a/%2F"),
        ("https://gatehouse.example.test/oauth/x/../token", TOKEN_URL),  # dot segments
        ("https://[::1]:443/oauth/token", "https://[::1]/oauth/token"),
    ],
)
def test_equivalent_uris_are_accepted(key, htu, request_url):
    assert verify_proof(headers=[make_proof("POST", htu, key)], method="POST", url=request_url)


@pytest.mark.parametrize(
    "htu",
    [
        "https://user:pw@gatehouse.example.test/oauth/token",
        "ftp://gatehouse.example.test/oauth/token",
        "/oauth/token",
        "https://gatehouse.example.test:99999/oauth/token",
        "https://gatehouse.example.test/oauth/tok en",
        "https://gatehouse.example.test/oauth/t\u00f6ken",
    ],
)
def test_unusable_htu_values_are_refused(key, htu):
    refused("htu", headers=[make_proof("POST", htu, key)], method="POST", url=TOKEN_URL)


@pytest.mark.parametrize("offset", [-61, -120, -3600, 6, 60, 86400])
def test_an_iat_outside_the_window_is_refused(key, offset):
    refused(
        "iat", headers=[make_proof("POST", TOKEN_URL, key, iat_offset=offset)], method="POST", url=TOKEN_URL
    )


@pytest.mark.parametrize("offset", [-55, -1, 3])
def test_an_iat_inside_the_window_is_accepted(key, offset):
    assert verify_proof(
        headers=[make_proof("POST", TOKEN_URL, key, iat_offset=offset)], method="POST", url=TOKEN_URL
    )


def test_the_iat_window_follows_settings(key, settings):
    settings.GATEHOUSE_DPOP_IAT_WINDOW_SECONDS = 10
    refused("iat", headers=[make_proof("POST", TOKEN_URL, key, iat_offset=-30)], method="POST", url=TOKEN_URL)


# --- replay ----------------------------------------------------------------------------------------------


def test_a_replayed_proof_is_refused(key, replay_cache):
    proof = make_proof("POST", TOKEN_URL, key)
    assert verify_proof(headers=[proof], method="POST", url=TOKEN_URL)
    refused("replay", headers=[proof], method="POST", url=TOKEN_URL)
    refused("replay", headers=[proof], method="POST", url=TOKEN_URL)


def test_a_fresh_proof_reusing_a_jti_is_refused(key, replay_cache):
    jti = uuid.uuid4().hex
    assert verify_proof(headers=[make_proof("POST", TOKEN_URL, key, jti=jti)], method="POST", url=TOKEN_URL)
    again = make_proof("GET", RESOURCE_URL, key, jti=jti, iat_offset=-2)
    refused("replay", headers=[again], method="GET", url=RESOURCE_URL)
    # The same jti under another key is another proof (the cache key is the pair jkt + jti).
    assert verify_proof(
        headers=[make_proof("POST", TOKEN_URL, new_key("EC"), jti=jti)], method="POST", url=TOKEN_URL
    )


def test_the_replay_cache_entry_outlives_the_iat_window(settings):
    settings.GATEHOUSE_DPOP_IAT_WINDOW_SECONDS = 300
    assert dpop._replay_timeout() > 300 + settings.GATEHOUSE_DPOP_IAT_FUTURE_SECONDS


def test_an_unreachable_replay_cache_refuses_the_proof(key, settings):
    settings.CACHES = {
        **settings.CACHES,
        "dpop_dead": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
    }
    settings.GATEHOUSE_DPOP_REPLAY_CACHE = "dpop_dead"
    error = refused(
        "replay_cache_unavailable", headers=[make_proof("POST", TOKEN_URL, key)], method="POST", url=TOKEN_URL
    )
    assert error.error == "invalid_dpop_proof"
    assert "127.0.0.1" not in error.description


# --- at a resource: ath and the bound key ----------------------------------------------------------------


def test_at_a_resource_ath_must_match_the_access_token(key):
    token = "at-" + uuid.uuid4().hex
    good = make_proof("GET", RESOURCE_URL, key, access_token=token)
    assert verify_proof(
        headers=[good], method="GET", url=RESOURCE_URL, access_token=token, expected_jkt=key.thumbprint()
    )
    other = make_proof("GET", RESOURCE_URL, key, access_token="another-token")
    refused("ath", headers=[other], method="GET", url=RESOURCE_URL, access_token=token)
    missing = make_proof("GET", RESOURCE_URL, key)
    refused("ath", headers=[missing], method="GET", url=RESOURCE_URL, access_token=token)


def test_a_proof_by_another_key_than_cnf_jkt_is_refused(key):
    token = "at-" + uuid.uuid4().hex
    thief = new_key("EC")
    proof = make_proof("GET", RESOURCE_URL, thief, access_token=token)
    refused(
        "key_mismatch",
        headers=[proof],
        method="GET",
        url=RESOURCE_URL,
        access_token=token,
        expected_jkt=key.thumbprint(),
    )
    # Without a token (a bound refresh token or authorization code), the key is still checked.
    refused(
        "key_mismatch",
        headers=[make_proof("POST", TOKEN_URL, thief)],
        method="POST",
        url=TOKEN_URL,
        expected_jkt=key.thumbprint(),
    )


# --- nonces ----------------------------------------------------------------------------------------------


def test_the_nonce_dance(key):
    error = refused(
        "nonce",
        headers=[make_proof("POST", TOKEN_URL, key)],
        method="POST",
        url=TOKEN_URL,
        nonce_required=True,
    )
    assert error.error == "use_dpop_nonce"
    assert error.nonce
    assert error.response_headers() == {"DPoP-Nonce": error.nonce}

    retry = make_proof("POST", TOKEN_URL, key, nonce=error.nonce)
    assert verify_proof(headers=[retry], method="POST", url=TOKEN_URL, nonce_required=True)


def test_invalid_dpop_proof_errors_carry_no_nonce(key):
    error = refused("htm", headers=[make_proof("POST", TOKEN_URL, key)], method="GET", url=TOKEN_URL)
    assert error.nonce is None
    assert error.response_headers() == {}


def test_a_nonce_from_the_previous_window_is_accepted(key, settings):
    previous = issue_nonce(at=time.time() - settings.GATEHOUSE_DPOP_NONCE_LIFETIME_SECONDS)
    proof = make_proof("POST", TOKEN_URL, key, nonce=previous)
    assert verify_proof(headers=[proof], method="POST", url=TOKEN_URL, nonce_required=True)


def test_a_stale_nonce_is_refused(key, settings):
    stale = issue_nonce(at=time.time() - 3 * settings.GATEHOUSE_DPOP_NONCE_LIFETIME_SECONDS)
    error = refused(
        "nonce",
        headers=[make_proof("POST", TOKEN_URL, key, nonce=stale)],
        method="POST",
        url=TOKEN_URL,
        nonce_required=True,
    )
    assert error.nonce != stale


@pytest.mark.parametrize("forged", ["made-up", "A" * 43, "x" * 256])
def test_a_forged_nonce_is_refused(key, forged):
    refused(
        "nonce",
        headers=[make_proof("POST", TOKEN_URL, key, nonce=forged)],
        method="POST",
        url=TOKEN_URL,
        nonce_required=True,
    )


def test_a_nonce_from_another_secret_key_is_refused(key, settings):
    settings.SECRET_KEY = "another-deployment-" + "k" * 50
    foreign = issue_nonce()
    settings.SECRET_KEY = "this-deployment-" + "s" * 50
    refused(
        "nonce",
        headers=[make_proof("POST", TOKEN_URL, key, nonce=foreign)],
        method="POST",
        url=TOKEN_URL,
        nonce_required=True,
    )


def test_a_bad_nonce_is_refused_even_when_nonces_are_optional(key):
    refused(
        "nonce", headers=[make_proof("POST", TOKEN_URL, key, nonce="made-up")], method="POST", url=TOKEN_URL
    )


# --- nothing the client sent is reflected -----------------------------------------------------------------


def test_errors_never_reflect_client_strings(key):
    marker = "<script>alert(1)</script>"
    shapes = [
        ({"htu": "https://evil.test/" + marker}, "POST", "htu"),
        ({"htm": marker[:16]}, "POST", "htm"),
        ({"nonce": marker}, "POST", "nonce"),
    ]
    for claims, method, reason in shapes:
        error = refused(
            reason, headers=[make_proof("POST", TOKEN_URL, key, claims=claims)], method=method, url=TOKEN_URL
        )
        for text in (error.description, str(error), repr(error.args)):
            assert "script" not in text and "evil" not in text
