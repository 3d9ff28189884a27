"""DPoP at the tool server (RFC 9449 §4.3, §7): each check refuses on its own; a good proof passes once."""

from __future__ import annotations

import os

import pytest

from gatehouse_toolkit import MemoryReplayCache, ProofRejected, Refused
from gatehouse_toolkit.dpop import access_token_hash, normalize_htu
from tests.oauth import dpop_client
from tests.toolkit.conftest import Clock

TOOL_URL = "https://records.example.test/mcp"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/4"  # keys are prefixed, then deleted


@pytest.fixture
def bound(signed):
    """A token bound to a fresh key (signed with Gatehouse's key), and that key."""
    key = dpop_client.new_key()
    return signed(cnf_jkt=key.thumbprint()), key


def authenticate(guard, token, proofs, *, scheme="DPoP", method="POST", url=TOOL_URL):
    return guard.authenticate(authorization=f"{scheme} {token}", dpop=proofs, method=method, url=url)


def refused(guard, token, proofs, **kwargs) -> Refused:
    with pytest.raises(Refused) as caught:
        authenticate(guard, token, proofs, **kwargs)
    return caught.value


def test_a_proof_by_the_bound_key_for_this_call_passes_once(offline_guard, bound):
    token, key = bound
    proof = dpop_client.make_proof("POST", TOOL_URL + "?page=2#x", key, access_token=token)
    caller = authenticate(offline_guard, token, [proof], url=TOOL_URL + "?page=2")
    assert caller.scheme == "DPoP" and caller.proof == proof and caller.token.jkt == key.thumbprint()
    again = refused(offline_guard, token, [proof])
    assert again.challenge.status == 401
    assert again.challenge.headers["WWW-Authenticate"].startswith('DPoP error="invalid_dpop_proof"')
    assert "already been used" in again.challenge.description


def test_a_real_dpop_bound_token_from_a_live_gatehouse(live):
    from gatehouse_toolkit import ToolServerGuard

    key = dpop_client.new_key("Ed25519")
    token = live.token(dpop_key=key)
    guard = ToolServerGuard(live.settings())
    url = guard.settings.url_for("/mcp")
    caller = authenticate(
        guard, token, [dpop_client.make_proof("POST", url, key, access_token=token)], url=url
    )
    assert caller.token.jkt == key.thumbprint()
    # The same token as Bearer: refused, and the challenge tells the client to use DPoP.
    with pytest.raises(Refused) as caught:
        guard.authenticate(authorization=f"Bearer {token}", dpop=[], method="POST", url=url)
    assert caught.value.challenge.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')


OTHER = dpop_client.new_key()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda t, k: [], "missing"),
        (lambda t, k: [""], "missing"),
        (lambda t, k: [proof(t, k), proof(t, k)], "multiple"),
        (lambda t, k: [proof(t, k) + ", " + proof(t, k)], "multiple"),
        (lambda t, k: ["not-a-jwt"], "malformed"),
        (lambda t, k: [proof(t, k, typ="JWT")], "typ"),
        (lambda t, k: [proof(t, k, typ=None)], "typ"),
        (lambda t, k: [dpop_client.unsigned_proof("POST", TOOL_URL, k)], "alg"),
        (lambda t, k: [proof(t, dpop_client.new_key("oct"))], "alg"),
        (lambda t, k: [proof(t, k, extra_header={"jwk": None})], "jwk"),
        (lambda t, k: [proof(t, k, embed_private=True)], "private_key"),
        (lambda t, k: [proof(t, k, header_key=dpop_client.new_key("Ed25519"))], "jwk"),
        (lambda t, k: [proof(t, k, header_key=OTHER)], "signature"),
        (lambda t, k: [proof(t, k, omit=("jti",))], "claims"),
        (lambda t, k: [proof(t, k, omit=("iat",))], "claims"),
        (lambda t, k: [proof(t, k, claims={"iat": "now"})], "claims"),
        (lambda t, k: [proof(t, k, claims={"htm": "GET"})], "htm"),
        (lambda t, k: [proof(t, k, claims={"htm": "post"})], "htm"),
        (lambda t, k: [proof(t, k, claims={"htu": TOOL_URL + "/other"})], "htu"),
        (lambda t, k: [proof(t, k, claims={"htu": "https://evil.example.test/mcp"})], "htu"),
        (lambda t, k: [proof(t, k, claims={"htu": TOOL_URL.replace("/mcp", "/x/../mcp")})], "htu"),
        (lambda t, k: [proof(t, k, iat_offset=-61)], "iat"),
        (lambda t, k: [proof(t, k, iat_offset=30)], "iat"),
        (lambda t, k: [proof(None, k)], "claims"),  # no ath at all
        (lambda t, k: [proof(t + "x", k)], "ath"),
        (lambda t, k: [proof(t, OTHER)], "key_mismatch"),
        (lambda t, k: [proof(t, k, claims={"jti": "x" * 300})], "claims"),
        (lambda t, k: [proof(t, k, extra_header={"crit": ["alg"]})], "malformed"),
    ],
)
def test_each_bad_proof_is_refused_for_its_own_reason(offline_guard, bound, make, reason):
    token, key = bound
    failure = refused(offline_guard, token, make(token, key))
    assert failure.challenge.reason == ("dpop_required" if reason == "missing" else "dpop_invalid")
    header = failure.challenge.headers["WWW-Authenticate"]
    assert header.startswith('DPoP error="invalid_dpop_proof", error_description="')
    assert 'algs="ES256 ES384 EdDSA RS256 PS256"' in header and "resource_metadata=" in header
    with pytest.raises(ProofRejected) as caught:
        offline_guard.dpop.verify(
            proofs=make(token, key), method="POST", url=TOOL_URL, access_token=token, jkt=key.thumbprint()
        )
    assert caught.value.reason == reason


def proof(token, key, **kwargs):
    return dpop_client.make_proof("POST", TOOL_URL, key, access_token=token, **kwargs)


def test_a_refused_proof_does_not_burn_its_jti(offline_guard, bound):
    token, key = bound
    good = proof(token, key, jti="one-id")
    refused(offline_guard, token, [good], method="GET")  # htm mismatch: nothing remembered
    assert authenticate(offline_guard, token, [good])


def test_an_unbound_token_in_the_dpop_scheme_is_refused(offline_guard, signed):
    key = dpop_client.new_key()
    token = signed()
    failure = refused(offline_guard, token, [proof(token, key)])
    assert failure.challenge.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_the_replay_cache_is_bounded_and_fails_closed_when_full():
    clock = Clock(0)
    cache = MemoryReplayCache(max_entries=2, clock=clock)
    assert cache.add("a", 10) and cache.add("b", 10)
    assert not cache.add("a", 10)
    from gatehouse_toolkit.dpop import ReplayCacheFull

    with pytest.raises(ReplayCacheFull):
        cache.add("c", 10)
    clock.now += 11  # both expire: room again, and "a" may be used again after its window
    assert cache.add("c", 10) and cache.add("a", 10) and len(cache) == 2


def test_a_full_replay_cache_refuses_proofs(offline_guard, bound):
    token, key = bound
    offline_guard.dpop.replay_cache = MemoryReplayCache(max_entries=1)
    assert authenticate(offline_guard, token, [proof(token, key)])
    failure = refused(offline_guard, token, [proof(token, key)])
    assert "retry later" in failure.challenge.description


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTPS://Records.Example.TEST:443/mcp?q=1#f", "https://records.example.test/mcp"),
        ("http://127.0.0.1:8001/m%63p", "http://127.0.0.1:8001/mcp"),
        ("https://records.example.test", "https://records.example.test/"),
        ("https://user@records.example.test/mcp", None),
        ("ftp://records.example.test/mcp", None),
        ("https://records.example.test/a\x00b", None),
        ("https://records.example.test/" + "a" * 3000, None),
        ("https://records.example.test/a/./b", None),
    ],
)
def test_htu_normalization(url, normal):
    assert normalize_htu(url) == normal


def test_ath_is_the_base64url_sha256_of_the_token():
    assert access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU") == (
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


def test_a_redis_replay_cache_is_shared_and_fails_closed(offline_guard, bound):
    import redis

    from gatehouse_toolkit import RedisReplayCache

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("Redis does not answer")
    token, key = bound
    prefix = f"gatehouse-toolkit-test:{key.thumbprint()}:"
    offline_guard.dpop.replay_cache = RedisReplayCache(client, prefix=prefix)
    good = proof(token, key)
    assert authenticate(offline_guard, token, [good])
    # Another process of the same tool server, sharing the store, sees the jti.
    from gatehouse_toolkit import ToolServerGuard

    other = ToolServerGuard(offline_guard.settings, keys=offline_guard.tokens.keys)
    other.dpop.replay_cache = RedisReplayCache(client, prefix=prefix)
    assert "already been used" in refused(other, token, [good]).challenge.description
    stored = list(client.scan_iter(prefix + "*"))
    assert len(stored) == 1 and 0 < client.ttl(stored[0]) <= 66
    client.delete(*stored)

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)  # nothing listens on port 1
    offline_guard.dpop.replay_cache = RedisReplayCache(dead)
    assert "retry later" in refused(offline_guard, token, [proof(token, key)]).challenge.description


@pytest.mark.parametrize("value", ["x" * 9000, "a.b.c\x00", "é.b.c", " , "])
def test_hostile_dpop_headers_are_refused(offline_guard, bound, value):
    token, _ = bound
    assert refused(offline_guard, token, [value]).challenge.status == 401
