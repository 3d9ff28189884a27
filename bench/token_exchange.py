"""On-behalf-of token exchange (RFC 8693) against plain client-credentials issuance, over HTTP, in one run.

    .venv/bin/python bench/token_exchange.py [--rounds 5] [--requests 300] [--concurrency 8] [--workers N]

Gatehouse is served exactly as ``bench/token_issuance.py`` serves it (its helpers are imported): its own
PostgreSQL database on 127.0.0.1:5432, gunicorn sync workers on a loopback port, DEBUG off, Redis as the
cache.  Both variants authenticate with private_key_jwt (ES256, assertions signed before each round) and ask
for one capability on one tool server:

* ``client_credentials``: the background agent of ``token_issuance.py`` (one grant lookup, sign, store).
* ``exchange``: an interactive helper agent presents a user's access token as ``subject_token``; Gatehouse
  looks the subject token up and re-checks it as introspection does, verifies its signature, checks the
  actor's grants for that user, signs a token with ``act``, stores it and writes ``token.exchanged``.

The user's token is minted once in the served database (as the broker stores tokens, one hour long) so that
no login or consent page is timed.  Rounds alternate between the variants, each going first in every other
round; the figure per variant is the median throughput of the rounds, with p50/p99 latency over all rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import token_issuance as served_bench  # noqa: E402

VARIANTS = ("client_credentials", "exchange")
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
REDIRECT_URI = "http://127.0.0.1:8765/callback"


# --- inside the served project ------------------------------------------------------------------------------
def setup_exchange() -> dict:
    """A user, the front agent holding the user's token, and the helper agent that exchanges it."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone
    from jwcrypto import jwk
    from oauth2_provider.models import AccessToken, set_token_value

    from audit.services import SYSTEM
    from governance import services
    from governance.models import Capability, Organization, TokenRecord, ToolServer
    from governance.oauth import jwt_tokens

    org = Organization.objects.get(slug="bench")
    server = ToolServer.objects.get(audience=served_bench.AUDIENCE)
    capability = Capability.objects.get(key=served_bench.SCOPE)
    owner = org.users.filter(role="admin").first()
    user = services.user_create(actor=SYSTEM, organization=org, username="bench-user")
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="bench-helper")
    agents = {}
    for name, jwks in (("front", None), ("helper", {"keys": [json.loads(key.export_public())]})):
        agents[name] = services.agent_create(
            actor=SYSTEM,
            organization=org,
            name=name,
            kind="interactive",
            owner=owner,
            jwks=jwks,
            ceiling=[capability],
            redirect_uris=[REDIRECT_URI],
        )
        services.grant_create(actor=SYSTEM, agent=agents[name], capability=capability, user=user)
    front = agents["front"]
    now = timezone.now()
    claims = jwt_tokens.AccessTokenClaims(
        issuer=settings.GATEHOUSE_ISSUER,
        subject=str(user.pk),
        client_id=front.application.client_id,
        audience=server.audience,
        scope=[capability.key],
        issued_at=now,
        expires_at=now + timedelta(hours=1),
        jti=uuid.uuid4().hex,
    )
    value = jwt_tokens.sign(claims)
    access_token = AccessToken(
        user=user,
        scope=capability.key,
        expires=claims.expires_at,
        application=front.application,
        resource=[server.audience],
    )
    set_token_value(access_token, value)
    access_token.save()
    TokenRecord.objects.create(
        access_token=access_token,
        jti=claims.jti,
        audience=server.audience,
        tool_server=server,
        agent=front,
        user=user,
        subject=str(user.pk),
        client_id=front.application.client_id,
        capabilities=capability.key,
        grant_type="authorization_code",
        issued_at=now,
        expires_at=claims.expires_at,
    )
    return {
        "client_id": agents["helper"].application.client_id,
        "private_jwk": key.export_private(),
        "subject_token": value,
    }


def count_events() -> dict:
    from audit.models import AuditEvent

    return {
        action: AuditEvent.objects.filter(action=action).count()
        for action in ("token.issued", "token.exchanged", "token.refused")
    }


# --- outside ------------------------------------------------------------------------------------------------
def exchange_bodies(creds: dict, count: int) -> list[tuple[dict, dict]]:
    from jwcrypto import jwk, jwt

    key = jwk.JWK.from_json(creds["private_jwk"])
    now = int(time.time())
    bodies = []
    for _ in range(count):
        assertion = jwt.JWT(
            header={"alg": "ES256", "kid": "bench-helper"},
            claims={
                "iss": creds["client_id"],
                "sub": creds["client_id"],
                "aud": served_bench.ISSUER,
                "iat": now,
                "exp": now + 600,
                "jti": uuid.uuid4().hex,
            },
        )
        assertion.make_signed_token(key)
        data = {
            "grant_type": GRANT,
            "subject_token": creds["subject_token"],
            "subject_token_type": ACCESS,
            "resource": served_bench.AUDIENCE,
            "scope": served_bench.SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion.serialize(),
        }
        bodies.append((data, {}))
    return bodies


@dataclass
class Variant:
    name: str
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def bodies(served, creds: dict, variant: str, count: int) -> list[tuple[dict, dict]]:
    if variant == "client_credentials":
        return served_bench.gatehouse_bodies(served.creds, count, served.token_url)
    return exchange_bodies(creds, count)


def check_exchange(served, creds: dict) -> dict:
    """One exchange outside the timing: it must name the user and carry ``act``."""
    data, headers = exchange_bodies(creds, 1)[0]
    answer = httpx.post(served.token_url, data=data, headers=headers)
    if answer.status_code != 200:
        raise SystemExit(f"the exchange failed: {answer.status_code} {answer.text[:300]}")
    body = answer.json()
    claims = served_bench.decode_claims(body["access_token"])
    if claims.get("act") != {"sub": creds["client_id"]} or body.get("issued_token_type") != ACCESS:
        raise SystemExit(f"the exchange did not issue an on-behalf-of token: {claims}")
    return {"sub": claims["sub"], "client_id": claims["client_id"], "act": claims["act"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300, help="requests per round and variant")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--inside", choices=["setup", "count"], help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.inside:
        import django

        django.setup()
        print(json.dumps(setup_exchange() if opts.inside == "setup" else count_events()))
        return
    opts.slow_requests = opts.requests  # read by token_issuance.start for its warm-up
    peer = next(p for p in served_bench.peers() if p.name == "gatehouse")
    variants = [Variant(name) for name in VARIANTS]
    served = None
    try:
        print("starting gatehouse …", file=sys.stderr, flush=True)
        served = served_bench.start(peer, opts)
        out = served_bench.run([served_bench.PYTHON, __file__, "--inside", "setup"], served.env)
        creds = json.loads(out.strip().splitlines()[-1])
        sample = check_exchange(served, creds)
        for number in range(opts.rounds):
            for variant in variants if number % 2 == 0 else variants[::-1]:
                print(f"round {number + 1}: {variant.name}", file=sys.stderr, flush=True)
                wall, latencies, failures = served_bench.load(
                    served.token_url, bodies(served, creds, variant.name, opts.requests), opts.concurrency
                )
                if failures:
                    raise SystemExit(f"{variant.name}: requests failed: {failures}")
                variant.rates.append(opts.requests / wall)
                variant.latencies.extend(latencies)
        out = served_bench.run([served_bench.PYTHON, __file__, "--inside", "count"], served.env)
        events = json.loads(out.strip().splitlines()[-1])
    finally:
        if served is not None:
            served_bench.stop(served)
    report(variants, opts, sample, events)


def report(variants: list[Variant], opts, sample: dict, events: dict) -> None:
    plain = statistics.median(variants[0].rates)
    plain_p50 = statistics.median(variants[0].latencies) * 1000
    print(
        f"\nclient credentials vs on-behalf-of exchange · gunicorn sync ×{opts.workers} · PostgreSQL"
        f" · {opts.concurrency} client threads · median of {opts.rounds} alternating rounds\n"
    )
    print("| variant | requests | tokens/s (median) | rounds (tokens/s) | p50 ms | p99 ms", end="")
    print(" | ÷ client credentials | p50 − client credentials |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for variant in variants:
        rate = statistics.median(variant.rates)
        p50 = statistics.median(variant.latencies) * 1000
        p99 = statistics.quantiles(variant.latencies, n=100)[98] * 1000
        cells = [
            variant.name,
            len(variant.latencies),
            f"{rate:.1f}",
            " ".join(f"{r:.0f}" for r in variant.rates),
            f"{p50:.1f}",
            f"{p99:.1f}",
            f"{rate / plain:.2f}×",
            f"{p50 - plain_p50:+.2f} ms",
        ]
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    print(f"\nexchange sample claims: {json.dumps(sample)}")
    print(f"audit events after the run: {json.dumps(events)}")


if __name__ == "__main__":
    main()
