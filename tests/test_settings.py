"""Production settings refuse insecure values at start-up, and a sound production environment passes
``manage.py check --deploy`` without a single warning.  Each case runs Django in a fresh subprocess."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
# Variables the settings read; cleared so the developer's shell cannot leak into a case.
READ_BY_SETTINGS = [
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "GATEHOUSE_ISSUER",
    "EMAIL_BACKEND",
    "REDIS_URL",
    "AUDIT_SIGNING_KEY",
    "AUDIT_SIGNING_KEY_FILE",
    "CSRF_TRUSTED_ORIGINS",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "DATABASE_PREPARED_STATEMENTS",
    "GATEHOUSE_TOKEN_DIRECT_PATH",
]


def _pem() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )


@pytest.fixture
def production(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in READ_BY_SETTINGS}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        GATEHOUSE_VAR_DIR=str(tmp_path / "var"),
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="gatehouse.example",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/gatehouse_settings_check",
        GATEHOUSE_ISSUER="https://gatehouse.example",
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        AUDIT_SIGNING_KEY=_pem(),
    )
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def start(env):
    return run(env, "-c", "import django; django.setup()")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SECRET_KEY", None, "SECRET_KEY must be set"),
        ("SECRET_KEY", "short-but-not-empty", "SECRET_KEY must be a random value of at least 50 characters"),
        ("SECRET_KEY", "a" * 64, "SECRET_KEY must be a random value"),
        ("SECRET_KEY", "django-insecure-" + secrets.token_urlsafe(48), "SECRET_KEY must be a random value"),
        ("ALLOWED_HOSTS", "*", "ALLOWED_HOSTS must not contain '*'"),
        ("ALLOWED_HOSTS", "gatehouse.example,*", "ALLOWED_HOSTS must not contain '*'"),
        ("ALLOWED_HOSTS", None, "ALLOWED_HOSTS must name the host names"),
        ("DATABASE_URL", "sqlite:///var/prod.sqlite3", "DATABASE_URL must point to PostgreSQL"),
        ("DATABASE_URL", None, "DATABASE_URL must point to PostgreSQL"),
        ("GATEHOUSE_ISSUER", "http://gatehouse.example", "GATEHOUSE_ISSUER must be an https:// URL"),
        ("GATEHOUSE_ISSUER", None, "GATEHOUSE_ISSUER must be an https:// URL"),
        ("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend", "must deliver mail"),
        ("EMAIL_BACKEND", "django.core.mail.backends.dummy.EmailBackend", "must deliver mail"),
        ("AUDIT_SIGNING_KEY", None, "AUDIT_SIGNING_KEY (PEM) or an existing AUDIT_SIGNING_KEY_FILE"),
        ("DEBUG", "maybe", "DEBUG must be one of"),
    ],
)
def test_production_refuses_an_insecure_value(production, variable, value, message):
    if value is None:
        production.pop(variable)
    else:
        production[variable] = value
    result = start(production)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr
    if variable == "SECRET_KEY" and value:
        assert value not in result.stderr  # the refusal never repeats the secret


def test_the_refusal_lists_every_problem_at_once(production):
    production.update(ALLOWED_HOSTS="*", GATEHOUSE_ISSUER="http://gatehouse.example")
    stderr = start(production).stderr
    assert "ALLOWED_HOSTS must not contain '*'" in stderr and "GATEHOUSE_ISSUER must be an https://" in stderr


def test_the_good_production_environment_starts(production):
    result = start(production)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("key_source", ["AUDIT_SIGNING_KEY", "AUDIT_SIGNING_KEY_FILE"])
def test_check_deploy_passes_without_a_warning(production, tmp_path, key_source):
    if key_source == "AUDIT_SIGNING_KEY_FILE":
        key_file = tmp_path / "audit.pem"
        key_file.write_text(production.pop("AUDIT_SIGNING_KEY"))
        production["AUDIT_SIGNING_KEY_FILE"] = str(key_file)
    result = run(production, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_check_deploy_would_catch_a_weakened_setting(production):
    """The clean pass above means something: the same check fails on a weakened production value."""
    production["SECURE_HSTS_SECONDS"] = "0"
    result = run(production, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0 and "security.W004" in result.stdout + result.stderr


def test_models_and_migrations_agree(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in READ_BY_SETTINGS}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="1", GATEHOUSE_VAR_DIR=str(tmp_path / "var"))
    result = run(env, "manage.py", "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout


@pytest.mark.parametrize(
    ("value", "threshold"), [(None, "0"), ("1", "0"), ("0", "None"), ("off", "None"), ("sometimes", None)]
)
def test_database_prepared_statements_switch(production, value, threshold):
    """The token endpoint's statements are prepared unless switched off; nonsense is refused."""
    env = {k: v for k, v in production.items() if k != "DATABASE_PREPARED_STATEMENTS"}
    if value is not None:
        env["DATABASE_PREPARED_STATEMENTS"] = value
    code = "import django; django.setup(); from django.conf import settings as s; "
    code += "print(s.DATABASES['default']['OPTIONS']['prepare_threshold'])"
    result = run(env, "-c", code)
    if threshold is None:
        assert result.returncode != 0 and "DATABASE_PREPARED_STATEMENTS must be one of" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == threshold
