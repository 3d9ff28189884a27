"""What DPoP costs: in-process proof verification against a plain bearer check.

Run: ``.venv/bin/python bench/dpop.py [--iterations N] [--section NAME]``.  Prints one table per section.
Redis rows use REDIS_URL, or redis://127.0.0.1:6379/15, and are skipped when Redis does not answer.

Sections are functions registered in ``SECTIONS``.  The HTTP comparison (DPoP-bound issuance against plain
issuance at the token endpoint, under gunicorn with PostgreSQL) needs its own server and is
``bench/dpop_issuance.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("GATEHOUSE_VAR_DIR", "var/bench")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.cache import caches  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from governance.oauth.dpop import access_token_hash, issue_nonce, verify_proof  # noqa: E402
from tests.oauth.dpop_client import make_proof, new_key  # noqa: E402

TOKEN_URL = "https://gatehouse.example.test/oauth/token"
RESOURCE_URL = "https://records.example.test/mcp"
REDIS_LOCATION = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"

Row = tuple[str, list[int] | None, str]  # label, per-call nanoseconds (None: skipped), note


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_LOCATION, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@contextmanager
def replay_cache(kind: str) -> Iterator[None]:
    """Point the DPoP replay cache at a fresh local-memory cache or at Redis."""
    backend = {
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "bench-dpop"},
        "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_LOCATION},
    }[kind]
    with override_settings(
        CACHES={**settings.CACHES, "bench_dpop": backend}, GATEHOUSE_DPOP_REPLAY_CACHE="bench_dpop"
    ):
        yield


def timed(calls: list[Callable[[], object]]) -> list[int]:
    samples = []
    for call in calls:
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return samples


def _verify_calls(
    kind: str, iterations: int, *, at_resource: bool, with_nonce: bool = False
) -> list[Callable[[], object]]:
    """Fresh proofs made beforehand (signing is the client's cost), one verify call per proof."""
    key = new_key(kind)
    token = secrets.token_urlsafe(32)
    jkt = key.thumbprint()
    if at_resource:
        proofs = [make_proof("GET", RESOURCE_URL, key, access_token=token) for _ in range(iterations)]
        return [
            lambda p=p: verify_proof(
                headers=[p], method="GET", url=RESOURCE_URL, access_token=token, expected_jkt=jkt
            )
            for p in proofs
        ]
    nonce = issue_nonce() if with_nonce else None
    proofs = [make_proof("POST", TOKEN_URL, key, nonce=nonce) for _ in range(iterations)]
    return [
        lambda p=p: verify_proof(headers=[p], method="POST", url=TOKEN_URL, nonce_required=with_nonce)
        for p in proofs
    ]


def section_verification(iterations: int) -> tuple[str, list[Row]]:
    """Median cost of one check, in-process: the bearer lookup hash, the replay cache alone, full DPoP."""
    rows: list[Row] = []
    tokens = [secrets.token_urlsafe(32) for _ in range(iterations)]
    rows.append(
        (
            "bearer: SHA-256 lookup hash of the token",
            timed([lambda t=t: hashlib.sha256(t.encode()).hexdigest() for t in tokens]),
            "",
        )
    )
    rows.append(
        ("ath: base64url(SHA-256(token))", timed([lambda t=t: access_token_hash(t) for t in tokens]), "")
    )
    redis_up = _redis_up()
    for cache_kind in ("locmem", "redis"):
        if cache_kind == "redis" and not redis_up:
            rows.append((f"replay cache add ({cache_kind})", None, "Redis not reachable"))
            continue
        with replay_cache(cache_kind):
            cache = caches["bench_dpop"]
            cache.add("bench:warm", 1, 5)
            keys = [f"bench:{secrets.token_hex(16)}" for _ in range(iterations)]
            rows.append(
                (
                    f"replay cache add ({cache_kind})",
                    timed([lambda k=k, c=cache: c.add(k, 1, 66) for k in keys]),
                    "",
                )
            )
    token_endpoint, with_nonce, resource = (
        "token endpoint",
        "token endpoint + nonce",
        "resource: ath + cnf.jkt",
    )
    cases = [
        ("ES256", "EC", token_endpoint, "locmem"),
        ("EdDSA", "Ed25519", token_endpoint, "locmem"),
        ("RS256", "RSA", token_endpoint, "locmem"),
        ("ES256", "EC", with_nonce, "locmem"),
        ("ES256", "EC", resource, "locmem"),
        ("ES256", "EC", token_endpoint, "redis"),
        ("ES256", "EC", resource, "redis"),
    ]
    for alg, kind, where, cache_kind in cases:
        label = f"DPoP verify {alg}, {where} ({cache_kind})"
        if cache_kind == "redis" and not redis_up:
            rows.append((label, None, "Redis not reachable"))
            continue
        calls = _verify_calls(kind, iterations, at_resource=where == resource, with_nonce=where == with_nonce)
        with replay_cache(cache_kind):
            rows.append((label, timed(calls), ""))
    return "DPoP proof verification vs a plain bearer check (in-process, one call each)", rows


# In-process sections only; DPoP-bound vs plain issuance over HTTP is bench/dpop_issuance.py.
SECTIONS: dict[str, Callable[[int], tuple[str, list[Row]]]] = {
    "verification": section_verification,
}


def print_table(title: str, rows: list[Row]) -> None:
    width = max(len(label) for label, _, _ in rows)
    print(f"\n## {title}\n")
    print(f"| {'check'.ljust(width)} | median µs | p95 µs |  n   |")
    print(f"|{'-' * (width + 2)}|----------:|-------:|-----:|")
    for label, samples, note in rows:
        if samples is None:
            print(f"| {label.ljust(width)} | {'—':>9} | {'—':>6} | {'—':>4} |  {note}")
            continue
        median = statistics.median(samples) / 1000
        p95 = statistics.quantiles(samples, n=20)[-1] / 1000
        print(f"| {label.ljust(width)} | {median:9.1f} | {p95:6.1f} | {len(samples):4d} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--section", choices=sorted(SECTIONS), action="append")
    args = parser.parse_args()
    import platform

    print(f"# DPoP bench: Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    for name in args.section or list(SECTIONS):
        title, rows = SECTIONS[name](args.iterations)
        print_table(title, rows)


if __name__ == "__main__":
    main()
