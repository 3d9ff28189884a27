"""Shared set-up for the audit benchmarks: a throw-away PostgreSQL database and a production-like Django.

Django runs with DEBUG off (no query log in memory) and the insecure-production checks satisfied by
throw-away values; the database is created on 127.0.0.1:5432, migrated, and dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"


def admin_sql(sql: str) -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as connection:
        connection.execute(sql)


def django_env(url: str) -> dict[str, str]:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": url,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1",
        "GATEHOUSE_ISSUER": "https://gatehouse.bench.test",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "GATEHOUSE_VAR_DIR": "var/bench-audit",
        "AUDIT_SIGNING_KEY": pem.decode(),
        "AUDIT_CHECKPOINT_EVERY": "0",
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": "",
    }


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


@contextmanager
def bench_database(name: str) -> Iterator[dict[str, str]]:
    """Create ``name``, migrate it in a child process, yield the Django environment; drop it afterwards."""
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{name}"')
    env = django_env(f"{PG}/{name}")
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
        )
        yield env
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_settings(name: str) -> str:
    with psycopg.connect(f"{PG}/{name}") as connection:
        values = [
            f"{setting}={connection.execute(f'SHOW {setting}').fetchone()[0]}"
            for setting in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        ]
    return ", ".join(values)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)
