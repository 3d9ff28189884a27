"""Decision API against vanilla django-oauth-toolkit's introspection, served the same way, in one run.

    .venv/bin/python bench/decision_api.py [--rounds 3] [--serial 200] [--requests 400] [--connections 16]
                                           [--workers 4]

Each peer gets its own PostgreSQL database on 127.0.0.1:5432 (``gh_enforce_bench_*``: created, migrated and
dropped by this script) and is served by gunicorn (sync workers) on a loopback port of the enforce range,
DEBUG off.  Per round and peer: latency with one connection (``--serial`` requests one after another, p50
and p99), then throughput with ``--connections`` concurrent connections (``--requests`` requests).  Rounds
alternate between the peers so that drifting load on the shared machine weighs on both alike.

* gatehouse: ``POST /access/v1/evaluation`` from a tool server authenticating with ``client_secret_basic``,
  about one client-credentials token (ES256 JWT) of a background agent: the token check (signature, issuer,
  expiry, audience, the stored record, the agent), the scope check, the user check (the grant, read again)
  and the rate check (a Lua script in Redis DB 3: a per-minute limit and a daily quota, both far above the
  load), then one ``decision.allowed`` audit event in the hash chain.
* vanilla: DOT 3.4's ``/o/introspect/`` with ``client_secret_basic`` (Django's fast salted MD5 hasher, as the
  vanilla-fast peer of ``bench/token_issuance.py``) about one of its own tokens.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import token_issuance as common  # noqa: E402  (servers, databases, CPU accounting)

ISSUER = "https://gatehouse.bench.test"
AUDIENCE = "https://records.bench.test/mcp"
SCOPE = "records.read_own"
REDIS = "redis://127.0.0.1:6379/3"
PORTS = {"gatehouse": 18320, "vanilla": 18321}


# --- inside the served project (a subprocess with the peer's settings) -----------------------------------
def setup_gatehouse() -> dict:
    import secrets

    from jwcrypto import jwk
    from oauth2_provider.models import get_application_model

    from audit.services import SYSTEM
    from governance import services

    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="bench-1")
    org = services.organization_create(actor=SYSTEM, slug="bench", name="Bench")
    owner = services.user_create(actor=SYSTEM, organization=org, username="bench-owner", role="admin")
    server = services.tool_server_create(actor=SYSTEM, organization=org, name="Records", audience=AUDIENCE)
    capability = services.capability_create(
        actor=SYSTEM, tool_server=server, key=SCOPE, rate_limit_per_minute=10**9, daily_quota=10**9
    )
    agent = services.agent_create(
        actor=SYSTEM,
        organization=org,
        name="billing",
        kind="background",
        owner=owner,
        jwks={"keys": [json.loads(key.export_public())]},
        ceiling=[capability],
    )
    services.grant_create(actor=SYSTEM, agent=agent, capability=capability)
    # The tool server's own credentials (no service sets them yet: the admin creates the application).
    Application = get_application_model()
    secret = secrets.token_urlsafe(48)
    application = Application(
        name="Records (tool server)",
        user=owner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    application.client_secret = secret
    application.save()
    server.application = application
    server.token_endpoint_auth_method = "client_secret_basic"
    server.save()
    return {
        "agent_id": agent.application.client_id,
        "private_jwk": key.export_private(),
        "caller_id": application.client_id,
        "caller_secret": secret,
    }


def count_events() -> dict:
    from audit.models import AuditEvent

    return {
        "allowed": AuditEvent.objects.filter(action="decision.allowed").count(),
        "denied": AuditEvent.objects.filter(action="decision.denied").count(),
    }


def inside(command: str) -> None:
    import django

    django.setup()
    actions = {"gatehouse": setup_gatehouse, "vanilla": common.setup_vanilla, "count": count_events}
    print(json.dumps(actions[command]()))


# --- outside ---------------------------------------------------------------------------------------------
@dataclass
class Served:
    name: str
    env: dict
    database: str
    process: subprocess.Popen | None = None
    url: str = ""
    content: bytes = b""
    headers: dict = field(default_factory=dict)
    serial: list = field(default_factory=list)  # latencies at one connection, all rounds
    rates: list = field(default_factory=list)  # requests/s at N connections, per round
    cpu: list = field(default_factory=list)


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _gatehouse_token(base: str, creds: dict) -> str:
    from jwcrypto import jwk, jwt

    key = jwk.JWK.from_json(creds["private_jwk"])
    now = int(time.time())
    claims = {
        "iss": creds["agent_id"],
        "sub": creds["agent_id"],
        "aud": ISSUER,
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.JWT(header={"alg": "ES256", "kid": "bench-1"}, claims=claims)
    assertion.make_signed_token(key)
    data = {
        "grant_type": "client_credentials",
        "scope": SCOPE,
        "resource": AUDIENCE,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion.serialize(),
    }
    response = httpx.post(base + "/oauth/token/", data=data, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def start(name: str, opts) -> Served:
    settings = "config.settings" if name == "gatehouse" else "bench.vanilla_dot.settings"
    wsgi = "config.wsgi:application" if name == "gatehouse" else "bench.vanilla_dot.wsgi:application"
    extra = (
        {
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "GATEHOUSE_ISSUER": ISSUER,
            "REDIS_URL": REDIS,
            "LOG_LEVEL": "WARNING",
        }
        if name == "gatehouse"
        else {"VANILLA_SECRET_HASHER": "md5"}
    )
    database = f"gh_enforce_bench_{name}"
    peer = common.Peer(name, settings, wsgi, env=extra)
    served = Served(
        name=name,
        env=common.peer_env(peer, database, tempfile.mkdtemp(prefix=f"gh-{name}-")),
        database=database,
    )
    if opts.asynchronous_commit:  # what the audit event's commit (its WAL flush) costs: see --help
        served.env["DATABASE_URL"] += "?options=-c%20synchronous_commit%3Doff"
    common.admin_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    common.admin_sql(f'CREATE DATABASE "{database}"')
    common.run([common.PYTHON, "-m", "django", "migrate", "--noinput"], served.env)
    kind = "gatehouse" if name == "gatehouse" else "vanilla"
    creds = json.loads(
        common.run([common.PYTHON, __file__, "--inside", kind], served.env).strip().splitlines()[-1]
    )
    port = PORTS[name]
    served.process = subprocess.Popen(
        [
            common.GUNICORN,
            wsgi,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(opts.workers),
            "--worker-class",
            "sync",
            "--log-level",
            "warning",
        ],
        env=served.env,
        cwd=common.ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    common.wait_until_up(base + "/", served.process)
    if name == "gatehouse":
        token = _gatehouse_token(base, creds)
        served.url = base + "/access/v1/evaluation"
        served.content = json.dumps(
            {
                "subject": {"type": "agent", "properties": {"token": token}},
                "action": {"name": SCOPE},
                "resource": {
                    "type": "tool",
                    "id": "read_patient_record",
                    "properties": {"parameters": {"patient_id": "p-001"}},
                },
                "context": {"http": {"method": "POST", "url": AUDIENCE}},
            }
        ).encode()
        served.headers = {
            "Authorization": _basic(creds["caller_id"], creds["caller_secret"]),
            "Content-Type": "application/json",
        }
    else:
        auth = _basic(creds["client_id"], creds["client_secret"])
        issued = httpx.post(
            base + "/o/token/",
            data={"grant_type": "client_credentials", "scope": SCOPE},
            headers={"Authorization": auth},
            timeout=30,
        )
        issued.raise_for_status()
        served.url = base + "/o/introspect/"
        served.content = urlencode({"token": issued.json()["access_token"]}).encode()
        served.headers = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
    sample = httpx.post(served.url, content=served.content, headers=served.headers, timeout=30)
    body = sample.json()
    if sample.status_code != 200 or not (body.get("decision") is True or body.get("active") is True):
        raise SystemExit(
            f"{name}: the sample request was not allowed: {sample.status_code} {sample.text[:300]}"
        )
    load(served, 2 * opts.workers, opts.connections)  # warm-up: every worker imports and connects
    return served


def load(served: Served, count: int, connections: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    local = threading.local()

    def one(_):
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=60)
        started = time.perf_counter()
        response = client.post(served.url, content=served.content, headers=served.headers)
        elapsed = time.perf_counter() - started
        ok = response.status_code == 200 and b'"decision": false' not in response.content
        with lock:
            latencies.append(elapsed)
            if not ok and len(failures) < 3:
                failures.append(f"{response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        list(pool.map(one, range(count)))
    wall = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{served.name}: requests failed: {failures}")
    return wall, latencies


def measure_round(served: Served, opts) -> None:
    _, latencies = load(served, opts.serial, 1)
    served.serial.extend(latencies)
    before, client = common.cpu_split(served), time.process_time()
    wall, _ = load(served, opts.requests, opts.connections)
    client, after = time.process_time() - client, common.cpu_split(served)
    served.rates.append(opts.requests / wall)
    if before:
        per_call = {name: 1000 * (after[name] - before[name]) / opts.requests for name in before}
        served.cpu.append({**per_call, "client": 1000 * client / opts.requests})


def stop(served: Served) -> None:
    if served.process is not None:
        served.process.terminate()
        try:
            served.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            served.process.kill()
    common.admin_sql(f'DROP DATABASE IF EXISTS "{served.database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inside", choices=["gatehouse", "vanilla", "count"], help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serial", type=int, default=200, help="requests per round at one connection")
    parser.add_argument("--requests", type=int, default=400, help="requests per round at N connections")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--asynchronous-commit",
        action="store_true",
        help="PostgreSQL synchronous_commit=off for both peers: shows what waiting for the WAL flush of each "
        "decision's audit event costs (not a recommended setting: a crash may lose the latest events)",
    )
    opts = parser.parse_args()
    if opts.inside:
        inside(opts.inside)
        return
    served: list[Served] = []
    loads: list[float] = []
    counted: dict = {}
    try:
        for name in ("gatehouse", "vanilla"):
            print(f"starting {name} …", file=sys.stderr, flush=True)
            served.append(start(name, opts))
        for number in range(opts.rounds):
            for item in served:
                print(f"round {number + 1}: {item.name}", file=sys.stderr, flush=True)
                loads.append(common.loadavg())
                measure_round(item, opts)
        loads.append(common.loadavg())
        counted = json.loads(
            common.run([common.PYTHON, __file__, "--inside", "count"], served[0].env).strip().splitlines()[-1]
        )
    finally:
        for item in served:
            stop(item)
    report(served, opts, loads, counted)


def report(served: list[Served], opts, loads: list[float], counted: dict) -> None:
    gate, peer = served
    print(
        f"\ndecision API vs vanilla DOT introspection · gunicorn sync ×{opts.workers} · PostgreSQL · Redis · "
        f"{opts.rounds} alternating rounds"
        f"{' · synchronous_commit=off' if opts.asynchronous_commit else ''}\n"
        f"load average (1 min) at each round's start and at the end: {' '.join(f'{x:.1f}' for x in loads)}\n"
    )
    print(
        f"| peer | p50 ms (1 conn) | p99 ms (1 conn) | req/s at {opts.connections} conns (median) | rounds |"
    )
    print("|---|---:|---:|---:|---|")
    for item in served:
        p50 = statistics.median(item.serial) * 1000
        p99 = statistics.quantiles(item.serial, n=100)[98] * 1000
        rounds = " ".join(f"{x:.0f}" for x in item.rates)
        print(f"| {item.name} | {p50:.2f} | {p99:.2f} | {statistics.median(item.rates):.0f} | {rounds} |")
    paired = [g / v for g, v in zip(gate.rates, peer.rates, strict=True)]
    ratio = statistics.median(gate.rates) / statistics.median(peer.rates)
    print(
        f"\nthroughput gatehouse ÷ vanilla: {ratio:.2f}× "
        f"(per-round ratios {' '.join(f'{x:.2f}' for x in paired)})"
    )
    if gate.cpu and peer.cpu:
        print("\nCPU milliseconds per request at N connections (median of the rounds):\n")
        print("| peer | app (gunicorn) | PostgreSQL | Redis | load generator |")
        print("|---|---:|---:|---:|---:|")
        for item in served:
            cpu = {name: statistics.median(r[name] for r in item.cpu) for name in item.cpu[0]}
            print(
                f"| {item.name} | {cpu['app']:.2f} | {cpu['postgres']:.2f} | {cpu['redis']:.2f} | "
                f"{cpu['client']:.2f} |"
            )
    print(f"\nGatehouse audit events after the run: {counted}")


if __name__ == "__main__":
    main()
