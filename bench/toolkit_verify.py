"""Offline verifications per second in the tool-server toolkit (gatehouse_toolkit), plain and DPoP-bound.

Run: ``.venv/bin/python bench/toolkit_verify.py [--rounds 7] [--tokens 2000] [--alg ES256]``.

No Django, no server: tokens are shaped exactly like Gatehouse's (header ``typ at+jwt``, ``alg``, ``kid``;
claims ``iss sub client_id aud scope iat exp jti``, plus ``cnf.jkt`` when bound) and signed with a fresh
key of Gatehouse's default algorithm; the toolkit holds the public half as if fetched from the JWKS.  All
tokens and DPoP proofs are made before the clock starts; each is used once (a proof's ``jti`` is recorded).

Rows, each timed per round over the same tokens:

* ``peer: jwcrypto jwt.JWT`` -- the usual one-liner (``jwt.JWT(jwt=..., key=JWKSet, check_claims=...)``),
  checking signature, ``iss``, ``aud`` and ``exp``: the peer the toolkit is compared with;
* ``toolkit: verify`` -- :meth:`AccessTokenVerifier.verify` (every offline check of docs/toolkit.md);
* ``toolkit: authenticate Bearer`` -- the adapters' entry point for a plain token (header parsing too);
* ``toolkit: authenticate DPoP`` -- a DPoP-bound token with its proof: token checks, every RFC 9449 §4.3
  check, ``ath``, ``cnf.jkt``, and the in-memory replay cache.

Prints per row the median and range of verifications per second over the rounds, p50/p99 latency of single
calls (from all rounds), and the median ratio against the peer measured in the same round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from jwcrypto import jwk, jws, jwt  # noqa: E402

from gatehouse_toolkit import JWKSCache, ToolServerGuard, ToolServerSettings  # noqa: E402
from gatehouse_toolkit.dpop import access_token_hash  # noqa: E402

ISSUER = "https://gatehouse.example.test"
RESOURCE = "https://records.example.test/mcp"
CURVES = {"ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519")}


def sign(key: jwk.JWK, alg: str, header: dict, claims: dict) -> str:
    core = jws.JWSCore(
        alg,
        key,
        json.dumps(header, separators=(",", ":")),
        json.dumps(claims, separators=(",", ":")).encode(),
        algs=[alg],
    )
    signed = core.sign()
    return f"{signed['protected']}.{signed['payload'].decode()}.{signed['signature']}"


def make_tokens(key: jwk.JWK, alg: str, count: int, *, dpop_key: jwk.JWK | None = None) -> list[str]:
    now = int(time.time())
    header = {"typ": "at+jwt", "alg": alg, "kid": key.get("kid")}
    tokens = []
    for _ in range(count):
        claims = {
            "iss": ISSUER,
            "sub": "42",
            "client_id": "agent-1",
            "aud": RESOURCE,
            "scope": "records.read_own appointments.book",
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        if dpop_key is not None:
            claims["cnf"] = {"jkt": dpop_key.thumbprint()}
        tokens.append(sign(key, alg, header, claims))
    return tokens


def make_proof(dpop_key: jwk.JWK, token: str, url: str) -> str:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": json.loads(dpop_key.export_public())}
    claims = {
        "jti": uuid.uuid4().hex,
        "htm": "POST",
        "htu": url,
        "iat": int(time.time()),
        "ath": access_token_hash(token),
    }
    return sign(dpop_key, "ES256", header, claims)


def timed(calls) -> list[int]:
    """Nanoseconds per call."""
    out = []
    clock = time.perf_counter_ns
    for call in calls:
        start = clock()
        call()
        out.append(clock() - start)
    return out


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--alg", choices=sorted(CURVES), default="ES256")
    opts = parser.parse_args(argv)

    kty, crv = CURVES[opts.alg]
    key = jwk.JWK.generate(kty=kty, crv=crv, kid="bench-1", alg=opts.alg, use="sig")
    public = {"keys": [json.loads(key.export_public())]}
    settings = ToolServerSettings(issuer=ISSUER, resource=RESOURCE, dpop_window=3600)
    keys = JWKSCache(settings)
    keys.load(public)
    guard = ToolServerGuard(settings, keys=keys)
    key_set = jwk.JWKSet.from_json(json.dumps(public))
    url = settings.url_for("/mcp")
    dpop_key = jwk.JWK.generate(kty="EC", crv="P-256")
    check = {"iss": ISSUER, "aud": RESOURCE, "exp": None}

    rows = [
        "peer: jwcrypto jwt.JWT",
        "toolkit: verify",
        "toolkit: authenticate Bearer",
        "toolkit: authenticate DPoP",
    ]
    rates: dict[str, list[float]] = {row: [] for row in rows}
    latencies: dict[str, list[int]] = {row: [] for row in rows}
    ratios: dict[str, list[float]] = {row: [] for row in rows}
    for _ in range(opts.rounds):
        plain = make_tokens(key, opts.alg, opts.tokens)
        bound = make_tokens(key, opts.alg, opts.tokens, dpop_key=dpop_key)
        proofs = [make_proof(dpop_key, token, url) for token in bound]
        work = {
            rows[0]: [
                lambda t=t: jwt.JWT(jwt=t, key=key_set, algs=[opts.alg], check_claims=check) for t in plain
            ],
            rows[1]: [lambda t=t: guard.tokens.verify(t) for t in plain],
            rows[2]: [
                lambda t=t: guard.authenticate(authorization=f"Bearer {t}", dpop=[], method="POST", url=url)
                for t in plain
            ],
            rows[3]: [
                lambda t=t, p=p: guard.authenticate(
                    authorization=f"DPoP {t}", dpop=[p], method="POST", url=url
                )
                for t, p in zip(bound, proofs, strict=True)
            ],
        }
        per_round = {}
        for row in rows:
            ns = timed(work[row])
            latencies[row].extend(ns)
            per_round[row] = len(ns) / (sum(ns) / 1e9)
            rates[row].append(per_round[row])
        for row in rows:
            ratios[row].append(per_round[row] / per_round[rows[0]])

    print(f"toolkit offline verification: {opts.alg} tokens, {opts.rounds} rounds x {opts.tokens} tokens")
    print(f"{'row':32} {'median/s':>10} {'range/s':>17} {'p50 µs':>8} {'p99 µs':>8} {'vs peer':>8}")
    for row in rows:
        values = rates[row]
        print(
            f"{row:32} {statistics.median(values):>10,.0f} {min(values):>8,.0f}-{max(values):<8,.0f} "
            f"{percentile(latencies[row], 0.5) / 1000:>8.0f} {percentile(latencies[row], 0.99) / 1000:>8.0f} "
            f"{statistics.median(ratios[row]):>7.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
