"""Rate limits and quotas against real Redis: exact at the boundary under concurrent processes, and closed
when Redis stops (a redis-server of the test's own, on a port of its own; the shared one is never touched)."""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import shutil
import socket
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
import redis

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance.enforcement import limits
from governance.services import capability_update
from tests.enforcement import limit_worker
from tests.enforcement.conftest import service_token
from tests.oauth import helpers

SHARED_REDIS = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/3"
OWN_REDIS_PORT = int(os.environ.get("GATEHOUSE_TEST_REDIS_PORT", "18310"))


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


needs_redis = pytest.mark.skipif(not _redis_answers(SHARED_REDIS), reason="needs Redis on 127.0.0.1")


@needs_redis
def test_the_minute_limit_is_exact_under_concurrent_processes():
    capability_id = secrets.randbelow(10**9)
    now = time.time()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        runs = [
            pool.submit(limit_worker.hammer, SHARED_REDIS, now, capability_id, 40, 100, None)
            for _ in range(4)
        ]
        answers = [answer for run in runs for answer in run.result(timeout=120)]
    assert len(answers) == 160
    assert answers.count(None) == 100  # exactly the limit, however the 160 calls interleaved
    refusals = [a for a in answers if a is not None]
    assert {reason for reason, _ in refusals} == {"rate_limited"}
    assert all(1 <= retry <= 60 for _, retry in refusals)


@needs_redis
def test_the_daily_quota_is_exact_under_concurrent_processes_and_refusals_count_nothing():
    capability_id = secrets.randbelow(10**9)
    now = time.time()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=3, mp_context=context) as pool:
        runs = [
            pool.submit(limit_worker.hammer, SHARED_REDIS, now, capability_id, 20, 1000, 25) for _ in range(3)
        ]
        answers = [answer for run in runs for answer in run.result(timeout=120)]
    assert answers.count(None) == 25
    assert {a[0] for a in answers if a is not None} == {"quota_exceeded"}
    # The minute counter holds only the counted calls: refused calls used nothing up.
    windows = limits.Windows.at(now, agent_id=1, user_id=2, capability_id=capability_id)
    client = redis.Redis.from_url(SHARED_REDIS)
    assert int(client.get(windows.minute_key)) == 25 and int(client.get(windows.day_key)) == 25
    client.delete(windows.minute_key, windows.day_key)


def test_the_window_is_the_clock_minute_and_retry_after_counts_to_its_end():
    windows = limits.Windows.at(120.25, agent_id=1, user_id=None, capability_id=9)
    assert windows.refusal(1) == limits.Limited("rate_limited", 60)
    assert limits.Windows.at(179.5, agent_id=1, user_id=None, capability_id=9).refusal(1).retry_after == 1
    assert windows.minute_key.endswith(":1:0:9:m2") and windows.day_key.endswith(":d0")


# --- Redis stops: deny, then service resumes --------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class OwnRedis:
    """A redis-server of this test's own: no persistence, loopback only, stopped by its pid."""

    def __init__(self, port: int):
        self.port, self.url, self.process = port, f"redis://127.0.0.1:{port}/0", None

    def start(self):
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _redis_answers(self.url):
            assert time.monotonic() < deadline, "own redis-server did not start"
            time.sleep(0.05)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis():
    if shutil.which("redis-server") is None or not _port_free(OWN_REDIS_PORT):
        pytest.skip("needs redis-server and a free port for a Redis of the test's own")
    server = OwnRedis(OWN_REDIS_PORT)
    server.start()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_redis_stopped_means_deny_and_service_resumes_when_it_returns(
    issuer, http, world, records, settings, own_redis
):
    settings.GATEHOUSE_RATE_LIMIT_REDIS_URL = own_redis.url
    settings.GATEHOUSE_DECISION_STORE_TIMEOUT_SECONDS = 0.3
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    capability_update(actor=SYSTEM, capability=world.read, rate_limit_per_minute=1000)
    token = service_token(http, issuer, world, agent, key)
    assert records.decide(token)["decision"] is True

    own_redis.stop()
    answer = records.decide(token)
    assert answer["decision"] is False
    assert (answer["context"]["reason"], answer["context"]["check"]) == ("unavailable", "service")
    event = AuditEvent.objects.filter(action="decision.denied").get()
    assert json.loads(event.parameters)["store"] == "rate-limit store"

    own_redis.start()
    assert records.decide(token)["decision"] is True
