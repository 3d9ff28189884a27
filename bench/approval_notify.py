"""Approval notifications: from an agent's request to the email accepted by an SMTP server, real worker.

    .venv/bin/python bench/approval_notify.py [--latency 40] [--rounds 3] [--requests 150] [--concurrency 8]

Serves Gatehouse with gunicorn (production settings, DEBUG off) on 127.0.0.1:18530, runs a Celery worker
(prefork, 2 processes) over Redis database 5, and an SMTP server (aiosmtpd) on 127.0.0.1:18511 that stamps
each message's arrival.  PostgreSQL database ``gh_approvals`` is dropped, created and migrated first.

* latency: one request at a time through the JSON API (``POST /api/approvals/requests/``, client secret by
  HTTP Basic); the clock runs from just before the POST to the SMTP server's acceptance of that request's
  email (found by its binding message).  p50, p95 and max.
* throughput: rounds alternate between the create endpoint and a peer, client-credentials token requests
  of the same agent with the same client authentication, each with ``--concurrency`` client threads.  The
  figure is the median of the rounds; the ratio pairs each create round with the token round after it.
  Every email of the throughput rounds must then arrive exactly once (checked, with the time to drain).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
PG = "postgres://postgres@127.0.0.1:5432"
DATABASE = "gh_approvals"
REDIS = "redis://127.0.0.1:6379/5"
HTTP_PORT, SMTP_PORT = 18530, 18511
BASE = f"http://127.0.0.1:{HTTP_PORT}"
ISSUER = "https://gatehouse.bench.test"
AUDIENCE = "https://records.bench.test/mcp"
SECRET = secrets.token_urlsafe(48)
MARKER = re.compile(r"bench-[0-9a-f]{8}-t?\d+")


# --- inside the served project (a subprocess with its settings) ---------------------------------------------
def setup(secret: str) -> dict:
    from audit.services import SYSTEM
    from governance import services

    org = services.organization_create(actor=SYSTEM, slug="bench", name="Bench")
    owner = services.user_create(actor=SYSTEM, organization=org, username="bench-owner", role="admin")
    approver = services.user_create(
        actor=SYSTEM, organization=org, username="approver", role="approver", email="approver@bench.test"
    )
    server = services.tool_server_create(actor=SYSTEM, organization=org, name="Records", audience=AUDIENCE)
    cancel = services.capability_create(
        actor=SYSTEM,
        tool_server=server,
        key="appointments.cancel",
        risk_level="high",
        requires_approval=True,
        approvals_required=1,
        approver_role="",
        named_approvers=[approver],
    )
    read = services.capability_create(actor=SYSTEM, tool_server=server, key="records.read_own")
    agent = services.agent_create(
        actor=SYSTEM,
        organization=org,
        name="runner",
        kind="background",
        owner=owner,
        ceiling=[cancel, read],
    )
    # A client secret by HTTP Basic for both endpoints: the client's signing stays out of the figures.
    type(agent).objects.filter(pk=agent.pk).update(token_endpoint_auth_method="client_secret_basic")
    application = agent.application
    application.client_secret = secret
    application.save()
    for capability in (cancel, read):
        services.grant_create(actor=SYSTEM, agent=agent, capability=capability)
    return {"client_id": application.client_id}


def inside() -> None:
    import django

    django.setup()
    print(json.dumps(setup(os.environ["BENCH_SECRET"])))


# --- outside: servers and load ------------------------------------------------------------------------------
class Arrivals:
    """The SMTP server's handler: when each marked email was accepted (monotonic clock of this process)."""

    def __init__(self):
        self.at: dict[str, float] = {}
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        now = time.monotonic()
        found = MARKER.search(envelope.content.decode("utf-8", "replace"))
        with self.lock:
            self.count += 1
            if found:
                self.at.setdefault(found.group(0), now)
        return "250 OK"


def environment() -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "GATEHOUSE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"{PG}/{DATABASE}",
        REDIS_URL=REDIS,
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="127.0.0.1",
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        GATEHOUSE_ISSUER=ISSUER,
        AUDIT_SIGNING_KEY=pem.decode(),
        LOG_LEVEL="WARNING",
        CONN_MAX_AGE="60",
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(SMTP_PORT),
        PYTHONPATH=str(ROOT),
        BENCH_SECRET=SECRET,
        GATEHOUSE_VAR_DIR="var/bench",
    )
    return env


def run(args: list[str], env: dict) -> str:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)  # noqa: S603
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def create_body(marker: str) -> dict:
    return {
        "capability": "appointments.cancel",
        "binding_message": marker,
        "authorization_details": [{"type": "appointments.cancel", "appointment_id": marker}],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    from aiosmtpd.controller import Controller

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    env = environment()
    run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], env)
    client_id = json.loads(run([PYTHON, "bench/approval_notify.py", "--inside"], env))["client_id"]
    run([PYTHON, "-m", "celery", "-A", "config", "purge", "-f"], env)

    arrivals = Arrivals()
    smtp = Controller(arrivals, hostname="127.0.0.1", port=SMTP_PORT)
    smtp.start()
    web = subprocess.Popen(  # noqa: S603
        [
            GUNICORN,
            "config.wsgi:application",
            "-b",
            f"127.0.0.1:{HTTP_PORT}",
            "-w",
            "2",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
    )
    worker = subprocess.Popen(  # noqa: S603
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-c",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "warning",
        ],
        env=env,
        cwd=ROOT,
    )
    run_id = uuid.uuid4().hex[:8]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{BASE}/portal/login/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        with httpx.Client(base_url=BASE, auth=(client_id, SECRET), timeout=30) as http:
            # Warm up both endpoints and the worker.
            http.post("/api/approvals/requests/", json=create_body(f"bench-{run_id}-w"))
            time.sleep(3)
            latencies = []
            for n in range(args.latency):
                marker = f"bench-{run_id}-{n}"
                started = time.monotonic()
                response = http.post("/api/approvals/requests/", json=create_body(marker))
                assert response.status_code == 201, response.text
                while marker not in arrivals.at and time.monotonic() - started < 30:
                    time.sleep(0.002)
                latencies.append(arrivals.at[marker] - started)
        print(
            f"request -> email accepted, {args.latency} sequential requests (seconds): "
            f"p50 {statistics.median(latencies):.3f}  p95 {percentile(latencies, 0.95):.3f}  "
            f"max {max(latencies):.3f}"
        )

        def create(n: int, local: httpx.Client) -> int:
            return local.post(
                "/api/approvals/requests/", json=create_body(f"bench-{run_id}-t{n}")
            ).status_code

        def token(n: int, local: httpx.Client) -> int:
            return local.post(
                "/oauth/token/",
                data={"grant_type": "client_credentials", "scope": "records.read_own", "resource": AUDIENCE},
            ).status_code

        def measure(call, offset: int) -> float:
            clients = [
                httpx.Client(base_url=BASE, auth=(client_id, SECRET), timeout=30)
                for _ in range(args.concurrency)
            ]
            started = time.monotonic()
            with ThreadPoolExecutor(args.concurrency) as pool:
                codes = list(
                    pool.map(lambda n: call(offset + n, clients[n % len(clients)]), range(args.requests))
                )
            elapsed = time.monotonic() - started
            for c in clients:
                c.close()
            bad = [c for c in codes if c not in (200, 201)]
            assert not bad, f"{len(bad)} failed ({bad[:3]})"
            return args.requests / elapsed

        creates, tokens, ratios = [], [], []
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            creates.append(measure(create, r * args.requests))
            tokens.append(measure(token, 0))
            ratios.append(creates[-1] / tokens[-1])
            print(
                f"round {r + 1} (load {load:.1f}): create {creates[-1]:.1f}/s  token {tokens[-1]:.1f}/s  "
                f"ratio {ratios[-1]:.2f}"
            )
        sent = args.rounds * args.requests
        drain_started = time.monotonic()
        expected = {f"bench-{run_id}-t{n}" for n in range(sent)}
        while not expected <= arrivals.at.keys() and time.monotonic() - drain_started < 60:
            time.sleep(0.2)
        missing = len(expected - arrivals.at.keys())
        print(
            f"create endpoint: median {statistics.median(creates):.1f} requests/s "
            f"(range {min(creates):.1f}-{max(creates):.1f}); token endpoint (peer): median "
            f"{statistics.median(tokens):.1f}/s; create / token, paired: {statistics.median(ratios):.2f}"
        )
        print(
            f"throughput emails: {sent - missing} of {sent} arrived, {arrivals.count} accepted in all "
            f"(expected {sent + args.latency + 1}); drained {time.monotonic() - drain_started:.1f} s after "
            "the last round"
        )
    finally:
        for process in (web, worker):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        smtp.stop()
        asyncio.set_event_loop(asyncio.new_event_loop())


if __name__ == "__main__":
    if "--inside" in sys.argv:
        inside()
    else:
        main()
