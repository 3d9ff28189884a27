"""DPoP-bound token issuance against plain issuance, over HTTP, side by side in one run.

    .venv/bin/python bench/dpop_issuance.py [--rounds 5] [--requests 300] [--concurrency 8] [--workers N]

Gatehouse is served exactly as ``bench/token_issuance.py`` serves it (its helpers are imported, not
copied): its own PostgreSQL database on 127.0.0.1:5432, gunicorn sync workers on a loopback port, DEBUG off,
Redis on 127.0.0.1:6379/14 as the cache (so the DPoP replay cache is Redis, as in production; ``--cache
locmem`` serves without Redis, to isolate the cost of the replay cache's round trip).  One
background agent authenticates with private_key_jwt and asks for one capability, with the same body in both
variants; the DPoP variant adds a ``DPoP`` header (ES256, a fresh ``jti`` per request).  Assertions and
proofs are signed before each round, so the client's signing is not timed.  Rounds alternate between the
variants on the same server, each going first in every other round; the figure per variant is the median
throughput of the rounds, with p50/p99 latency over all rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import token_issuance as served_bench  # noqa: E402
from tests.oauth.dpop_client import make_proof, new_key  # noqa: E402

VARIANTS = ("plain", "dpop")


@dataclass
class Variant:
    name: str
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def bodies(served, variant: str, count: int, key) -> list[tuple[dict, dict]]:
    """The benchmark's client-credentials bodies; for ``dpop``, each with its own proof."""
    plain = served_bench.gatehouse_bodies(served.creds, count, served.token_url)
    if variant == "plain":
        return plain
    htu = served_bench.ISSUER + "/oauth/token/"  # the proof names the issuer's URL, not the loopback port
    return [(data, {**headers, "DPoP": make_proof("POST", htu, key)}) for data, headers in plain]


def check_binding(served, key) -> dict:
    """One DPoP request outside the timing: it must come back bound to the key."""
    data, headers = bodies(served, "dpop", 1, key)[0]
    answer = httpx.post(served.token_url, data=data, headers=headers)
    answer.raise_for_status()
    body = answer.json()
    claims = served_bench.decode_claims(body["access_token"])
    if body["token_type"] != "DPoP" or claims.get("cnf", {}).get("jkt") != key.thumbprint():
        raise SystemExit(
            f"the DPoP variant did not get a bound token: {body['token_type']}, {claims.get('cnf')}"
        )
    return {"token_type": body["token_type"], "cnf": claims["cnf"]}


def run_round(served, variant: Variant, opts, key) -> None:
    wall, latencies, failures = served_bench.load(
        served.token_url, bodies(served, variant.name, opts.requests, key), opts.concurrency
    )
    if failures:
        raise SystemExit(f"{variant.name}: requests failed: {failures}")
    variant.rates.append(opts.requests / wall)
    variant.latencies.extend(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300, help="requests per round and variant")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument(
        "--cache",
        choices=["redis", "locmem"],
        default="redis",
        help="Gatehouse's cache (replay caches): Redis as in production, or each worker's local memory",
    )
    opts = parser.parse_args()
    opts.slow_requests = opts.requests  # read by token_issuance.start for its warm-up
    peer = next(p for p in served_bench.peers() if p.name == "gatehouse")
    if opts.cache == "locmem":  # isolates the cost of the extra Redis round trip a proof's jti takes
        peer.env.pop("REDIS_URL", None)
    key = new_key("EC")
    variants = [Variant(name) for name in VARIANTS]
    served = None
    try:
        print("starting gatehouse …", file=sys.stderr, flush=True)
        served = served_bench.start(peer, opts)
        sample = check_binding(served, key)
        for number in range(opts.rounds):
            # Alternate, and swap which goes first, so drift in the machine's load weighs on both alike.
            for variant in variants if number % 2 == 0 else variants[::-1]:
                print(f"round {number + 1}: {variant.name}", file=sys.stderr, flush=True)
                run_round(served, variant, opts, key)
        counted = served_bench.run(
            [served_bench.PYTHON, served_bench.__file__, "--inside", "count"], served.env
        )
        events = json.loads(counted.strip().splitlines()[-1])["token_issued_events"]
    finally:
        if served is not None:
            served_bench.stop(served)
    report(variants, opts, sample, events)


def report(variants: list[Variant], opts, sample: dict, events) -> None:
    plain = statistics.median(variants[0].rates)
    plain_p50 = statistics.median(variants[0].latencies) * 1000
    print(
        f"\nclient-credentials issuance, plain vs DPoP-bound · gunicorn sync ×{opts.workers} · PostgreSQL"
        f" · {'Redis' if opts.cache == 'redis' else 'per-worker local-memory'} replay cache"
        f" · {opts.concurrency} client threads"
        f" · median of {opts.rounds} alternating rounds\n"
    )
    print("| variant | requests | tokens/s (median) | rounds (tokens/s) | p50 ms | p99 ms", end="")
    print(" | ÷ plain | p50 − plain |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for variant in variants:
        rate = statistics.median(variant.rates)
        p50 = statistics.median(variant.latencies) * 1000
        p99 = statistics.quantiles(variant.latencies, n=100)[98] * 1000
        rounds = " ".join(f"{r:.0f}" for r in variant.rates)
        cells = [
            variant.name,
            len(variant.latencies),
            f"{rate:.1f}",
            rounds,
            f"{p50:.1f}",
            f"{p99:.1f}",
            f"{rate / plain:.2f}×",
            f"{p50 - plain_p50:+.2f} ms",
        ]
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    print(f"\nDPoP sample answer: {json.dumps(sample)}")
    print(f"Audit events token.issued after the run: {events}")


if __name__ == "__main__":
    main()
