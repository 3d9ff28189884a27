"""The Celery wiring against a real worker process and the real Redis broker (the PostgreSQL + Redis run)."""

import os
import subprocess
import sys
import time
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import connection

from audit.models import AuditCheckpoint
from audit.services import Actor, record
from audit.tasks import create_checkpoint
from audit.verify import verify_chain

pytestmark = [
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (.ci/run sets it)"),
    pytest.mark.django_db(transaction=True),
]


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def signing_pem(settings):
    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    settings.AUDIT_SIGNING_KEY = pem
    return pem


@pytest.fixture
def worker(signing_pem):
    """A `celery worker` subprocess consuming a queue of its own, on the test database."""
    if connection.vendor != "postgresql":
        pytest.skip("the worker process shares the test database over PostgreSQL")
    queue = f"test-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "DATABASE_URL": _database_url(), "AUDIT_SIGNING_KEY": signing_pem}
    process = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield queue
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        if process.returncode not in (0, -15, 143):
            print(output.decode(errors="replace"))  # noqa: T201 - shown only when the worker failed


def test_checkpoint_task_is_run_by_a_worker_and_verifies(worker):
    actor = Actor(type="system", label="celery test")
    for n in range(3):
        record(action="decision.allowed", actor=actor, parameters={"n": n})
    assert not AuditCheckpoint.objects.exists()

    create_checkpoint.apply_async(queue=worker)

    deadline = time.monotonic() + 60
    while not AuditCheckpoint.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert AuditCheckpoint.objects.count() == 1, "the worker did not sign a checkpoint within 60 s"
    report = verify_chain()
    assert report.ok, report.problems
    assert report.checkpoints == 1
