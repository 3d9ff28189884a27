"""Token issuance: Gatehouse against a vanilla django-oauth-toolkit server, served the same way, in one run.

    .venv/bin/python bench/token_issuance.py [--rounds 5] [--requests 300] [--slow-requests 24]
                                             [--concurrency 8] [--workers 4]

Each peer gets its own PostgreSQL database on 127.0.0.1:5432 (created, migrated, dropped by this script) and
is served by gunicorn (sync workers) on a free loopback port, DEBUG off.  A small thread pool of httpx
clients sends a bounded number of client-credentials token requests per round; the figure per peer is the
median throughput of the rounds, with p50/p99 latency over all rounds.

* gatehouse: a background agent authenticates with private_key_jwt (ES256; a fresh assertion per request,
  signed before the round starts so the client's signing is not timed), asks for one capability on one
  tool server (RFC 8707 resource); Gatehouse checks the assertion and its jti, the agent's state, the
  grant and the audience, signs an RFC 9068 JWT, stores it hashed and writes an audit event.
* vanilla-default: DOT 3.4 stock models and views, client_secret_basic, DOT's default hasher (PBKDF2).
* vanilla-fast: the same with Django's salted MD5 hasher, standing in for any fast secret hasher.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
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
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
PG = "postgres://postgres@127.0.0.1:5432"
# On a shared machine each user of the bench keeps to its own names: databases are created as
# "<BENCH_DATABASE_PREFIX>_<peer>_<pid>", the cache is BENCH_REDIS_URL, servers bind in BENCH_PORTS.
DATABASE_PREFIX = os.environ.get("BENCH_DATABASE_PREFIX", "gh_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
ISSUER = "https://gatehouse.bench.test"
AUDIENCE = "https://records.bench.test/mcp"
SCOPE = "records.read_own"


@dataclass
class Peer:
    name: str
    settings: str
    wsgi: str
    env: dict = field(default_factory=dict)
    slow: bool = False


def peers() -> list[Peer]:
    return [
        Peer(
            "gatehouse",
            "config.settings",
            "config.wsgi:application",
            env={
                "DEBUG": "0",
                "SECURE_SSL_REDIRECT": "0",
                "GATEHOUSE_ISSUER": ISSUER,
                "REDIS_URL": REDIS_URL,
                "LOG_LEVEL": "WARNING",
            },
        ),
        Peer(
            "vanilla-default",
            "bench.vanilla_dot.settings",
            "bench.vanilla_dot.wsgi:application",
            env={"VANILLA_SECRET_HASHER": "default"},
            slow=True,
        ),
        Peer(
            "vanilla-fast",
            "bench.vanilla_dot.settings",
            "bench.vanilla_dot.wsgi:application",
            env={"VANILLA_SECRET_HASHER": "md5"},
        ),
    ]


# --- inside the served project: set up data (run as a subprocess with the peer's settings) ------------------
def setup_gatehouse() -> dict:
    from jwcrypto import jwk

    from audit.services import SYSTEM
    from governance import services

    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="bench-1")
    org = services.organization_create(actor=SYSTEM, slug="bench", name="Bench")
    owner = services.user_create(actor=SYSTEM, organization=org, username="bench-owner", role="admin")
    server = services.tool_server_create(actor=SYSTEM, organization=org, name="Records", audience=AUDIENCE)
    capability = services.capability_create(actor=SYSTEM, tool_server=server, key=SCOPE)
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
    return {"client_id": agent.application.client_id, "private_jwk": key.export_private()}


def setup_vanilla() -> dict:
    from django.contrib.auth import get_user_model
    from oauth2_provider.models import get_application_model

    Application = get_application_model()
    owner = get_user_model().objects.create_user("bench-owner")
    secret = secrets.token_urlsafe(48)
    app = Application.objects.create(
        name="bench",
        user=owner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        client_secret=secret,
    )
    return {"client_id": app.client_id, "client_secret": secret}


def count_token_events() -> dict:
    from audit.models import AuditEvent

    return {"token_issued_events": AuditEvent.objects.filter(action="token.issued").count()}


def inside(command: str) -> None:
    import django

    django.setup()
    result = {"gatehouse": setup_gatehouse, "vanilla": setup_vanilla, "count": count_token_events}[command]()
    print(json.dumps(result))


# --- outside: databases, servers, load ------------------------------------------------------------------
def free_port() -> int:
    """A free loopback port: in ``BENCH_PORTS`` ("18100-18199") when set, else any the system gives."""
    first, _, last = os.environ.get("BENCH_PORTS", "").partition("-")
    candidates = range(int(first), int(last) + 1) if first and last else [0]
    for candidate in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port in BENCH_PORTS")


def admin_sql(statement: str) -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def peer_env(peer: Peer, database: str, var_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "GATEHOUSE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE=peer.settings,
        DATABASE_URL=f"{PG}/{database}",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        GATEHOUSE_VAR_DIR=var_dir,
        PYTHONPATH=str(ROOT),
        CONN_MAX_AGE="60",
    )
    env.update(peer.env)
    if peer.name == "gatehouse":
        env["AUDIT_SIGNING_KEY"] = audit_signing_key()
    return env


def audit_signing_key() -> str:
    """A throwaway Ed25519 key for audit checkpoints (production settings refuse to start without one)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


def run(args: list[str], env: dict) -> str:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not start")


def gatehouse_bodies(creds: dict, count: int, token_url: str) -> list[tuple[dict, dict]]:
    from jwcrypto import jwk, jwt

    key = jwk.JWK.from_json(creds["private_jwk"])
    bodies = []
    now = int(time.time())
    for _ in range(count):
        claims = {
            "iss": creds["client_id"],
            "sub": creds["client_id"],
            "aud": ISSUER,
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.JWT(header={"alg": "ES256", "kid": "bench-1"}, claims=claims)
        token.make_signed_token(key)
        bodies.append(
            (
                {
                    "grant_type": "client_credentials",
                    "scope": SCOPE,
                    "resource": AUDIENCE,
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": token.serialize(),
                },
                {},
            )
        )
    return bodies


def vanilla_bodies(creds: dict, count: int, token_url: str) -> list[tuple[dict, dict]]:
    basic = base64.b64encode(f"{creds['client_id']}:{creds['client_secret']}".encode()).decode()
    return [
        ({"grant_type": "client_credentials", "scope": SCOPE}, {"Authorization": f"Basic {basic}"})
    ] * count


def load(
    url: str, bodies: list[tuple[dict, dict]], concurrency: int
) -> tuple[float, list[float], list[dict]]:
    """Send every body once from ``concurrency`` threads; return (wall seconds, latencies, first failures)."""
    latencies: list[float] = []
    failures: list[dict] = []
    lock = threading.Lock()
    local = threading.local()
    # Encoded before the clock starts, as the assertions are signed before it: the load generator shares
    # the CPUs with the servers, and what it spends is not the peers' throughput.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    encoded = [(urlencode(data).encode(), {**form, **headers}) for data, headers in bodies]

    def one(item):
        content, headers = item
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=60)
        started = time.perf_counter()
        response = client.post(url, content=content, headers=headers)
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)
            if response.status_code != 200 and len(failures) < 3:
                failures.append({"status": response.status_code, "body": response.text[:300]})

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, encoded))
    return time.perf_counter() - started, latencies, failures


def decode_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@dataclass
class Served:
    peer: Peer
    database: str
    env: dict
    kind: str = ""
    creds: dict = field(default_factory=dict)
    process: subprocess.Popen | None = None
    token_url: str = ""
    rates: list = field(default_factory=list)
    latencies: list = field(default_factory=list)
    claims: dict = field(default_factory=dict)
    cpu: list = field(default_factory=list)  # per round: CPU ms per token of app, postgres, redis, client

    def bodies(self, count: int) -> list[tuple[dict, dict]]:
        make = gatehouse_bodies if self.kind == "gatehouse" else vanilla_bodies
        return make(self.creds, count, self.token_url)


def start(peer: Peer, opts) -> Served:
    database = f"{DATABASE_PREFIX}_{peer.name.replace('-', '_')}_{os.getpid()}"
    served = Served(
        peer=peer,
        database=database,
        env=peer_env(peer, database, tempfile.mkdtemp(prefix=f"gh-bench-{peer.name}-")),
    )
    served.kind = "gatehouse" if peer.name == "gatehouse" else "vanilla"
    admin_sql(f'DROP DATABASE IF EXISTS "{database}"')
    admin_sql(f'CREATE DATABASE "{database}"')
    run([PYTHON, "-m", "django", "migrate", "--noinput"], served.env)
    served.creds = json.loads(
        run([PYTHON, __file__, "--inside", served.kind], served.env).strip().splitlines()[-1]
    )
    port = free_port()
    served.process = subprocess.Popen(
        [
            GUNICORN,
            peer.wsgi,
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
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base + "/", served.process)
    served.token_url = base + ("/oauth/token/" if served.kind == "gatehouse" else "/o/token/")
    # Warm-up (every worker imports and connects), and a look at what the peer really issues.
    count = opts.slow_requests if peer.slow else opts.requests
    _, _, failures = load(
        served.token_url, served.bodies(max(2 * opts.workers, count // 10)), opts.concurrency
    )
    if failures:
        raise SystemExit(f"{peer.name}: warm-up requests failed: {failures}")
    data, headers = served.bodies(1)[0]
    sample = httpx.post(served.token_url, data=data, headers=headers)
    sample.raise_for_status()
    if served.kind == "gatehouse":
        served.claims = decode_claims(sample.json()["access_token"])
    return served


def loadavg() -> float:
    """The 1-minute load average: the machine is shared, so every figure carries the load it ran under."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _processes() -> list[tuple[int, int, str, float]]:
    """(pid, parent pid, command name, CPU seconds so far) of every process (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[1] is the parent pid; fields[11] and fields[12] are utime and stime in clock ticks.
        found.append((int(entry.name), int(fields[1]), name, (int(fields[11]) + int(fields[12])) / _TICK))
    return found


def cpu_split(served: Served) -> dict[str, float]:
    """CPU seconds so far of the peer's gunicorn (master and workers), of PostgreSQL and of Redis.

    PostgreSQL counts all its processes (backends, WAL writer, checkpointer): the other peer's backends
    idle while this one is measured.  Not on Linux: empty, and the report leaves the columns out.
    """
    if not Path("/proc/self/stat").exists() or served.process is None:
        return {}
    split = {"app": 0.0, "postgres": 0.0, "redis": 0.0}
    for pid, parent, name, seconds in _processes():
        if pid == served.process.pid or parent == served.process.pid:
            split["app"] += seconds
        elif name == "postgres":
            split["postgres"] += seconds
        elif name.startswith("redis-server"):
            split["redis"] += seconds
    return split


def measure_round(served: Served, opts) -> None:
    count = opts.slow_requests if served.peer.slow else opts.requests
    bodies = served.bodies(count)
    before, client = cpu_split(served), time.process_time()
    wall, latencies, failures = load(served.token_url, bodies, opts.concurrency)
    client, after = time.process_time() - client, cpu_split(served)
    if failures:
        raise SystemExit(f"{served.peer.name}: requests failed: {failures}")
    served.rates.append(count / wall)
    served.latencies.extend(latencies)
    if before:  # CPU milliseconds per token, by process group; the client's own cost too
        per_token = {name: 1000 * (after[name] - before[name]) / count for name in before}
        served.cpu.append({**per_token, "client": 1000 * client / count})


def stop(served: Served) -> None:
    if served.process is not None:
        served.process.terminate()
        try:
            served.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            served.process.kill()
    admin_sql(f'DROP DATABASE IF EXISTS "{served.database}" WITH (FORCE)')


def summary(served: Served) -> dict:
    result = {
        "peer": served.peer.name,
        "rate": statistics.median(served.rates),
        "rates": served.rates,
        "p50": statistics.median(served.latencies) * 1000,
        "p99": statistics.quantiles(served.latencies, n=100)[98] * 1000,
        "requests": len(served.latencies),
        "claims": served.claims,
        "cpu": {name: statistics.median(r[name] for r in served.cpu) for name in served.cpu[0]}
        if served.cpu
        else {},
    }
    if served.kind == "gatehouse":
        out = run([PYTHON, __file__, "--inside", "count"], served.env)
        result.update(json.loads(out.strip().splitlines()[-1]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inside", choices=["gatehouse", "vanilla", "count"], help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300, help="requests per round (fast peers)")
    parser.add_argument("--slow-requests", type=int, default=24, help="requests per round (PBKDF2 peer)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--only", action="append", help="measure only these peers")
    opts = parser.parse_args()
    if opts.inside:
        inside(opts.inside)
        return
    chosen = [peer for peer in peers() if not opts.only or peer.name in opts.only]
    served: list[Served] = []
    loads: list[float] = []
    try:
        for peer in chosen:
            print(f"starting {peer.name} …", file=sys.stderr, flush=True)
            served.append(start(peer, opts))
        # Rounds alternate between the peers, so load on the machine that drifts during the run
        # weighs on all of them alike.
        for number in range(opts.rounds):
            for item in served:
                print(f"round {number + 1}: {item.peer.name}", file=sys.stderr, flush=True)
                loads.append(loadavg())
                measure_round(item, opts)
        loads.append(loadavg())
        results = {item.peer.name: summary(item) for item in served}
    finally:
        for item in served:
            stop(item)
    report(results, opts, loads)


def report(results: dict, opts, loads: list[float]) -> None:
    gate = results.get("gatehouse")
    print(
        f"\nclient-credentials token issuance · gunicorn sync ×{opts.workers} · PostgreSQL · "
        f"{opts.concurrency} client threads · median of {opts.rounds} alternating rounds\n"
        f"load average (1 min) at each round's start and at the end: {' '.join(f'{x:.1f}' for x in loads)}\n"
    )
    print(
        "| peer | requests | tokens/s (median) | rounds (tokens/s) | p50 ms | p99 ms | Gatehouse ÷ peer"
        " | per-round ratios (median) |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---|")
    for name, r in results.items():
        ratio = f"{gate['rate'] / r['rate']:.2f}×" if gate else "–"
        rounds = " ".join(f"{x:.0f}" if x >= 10 else f"{x:.1f}" for x in r["rates"])
        # Round i of each peer ran back to back, under nearly the same load: their ratio drifts less.
        paired = [g / v for g, v in zip(gate["rates"], r["rates"], strict=True)] if gate else []
        pairs = "–"
        if paired:
            pairs = " ".join(f"{x:.2f}" for x in paired) + f" ({statistics.median(paired):.2f}×)"
        cells = [name, r["requests"], f"{r['rate']:.1f}", rounds, f"{r['p50']:.1f}", f"{r['p99']:.1f}", ratio]
        print("| " + " | ".join(str(cell) for cell in [*cells, pairs]) + " |")
    if any(r["cpu"] for r in results.values()):
        print("\nCPU milliseconds per token (median of the rounds), by process:\n")
        print("| peer | app (gunicorn) | PostgreSQL | Redis | server total | load generator |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, r in results.items():
            cpu = r["cpu"]
            server = cpu["app"] + cpu["postgres"] + cpu["redis"]
            cells = [cpu["app"], cpu["postgres"], cpu["redis"], server, cpu["client"]]
            print(f"| {name} | " + " | ".join(f"{x:.2f}" for x in cells) + " |")
    if gate:
        claims = {k: gate["claims"].get(k) for k in ("aud", "scope", "client_id", "sub")}
        print(f"\nGatehouse token sample claims: {json.dumps(claims)}")
        print(f"Gatehouse audit events token.issued after the run: {gate.get('token_issued_events')}")


if __name__ == "__main__":
    main()
