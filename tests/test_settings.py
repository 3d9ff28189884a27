"""Production settings refuse insecure values at start-up, and a sound production environment passes
``manage.py check --deploy`` without a single warning.  Each case runs Django in a fresh subprocess."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
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


def _pem(key=None) -> str:
    key = Ed25519PrivateKey.generate() if key is None else key
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


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
        # Nearly one repeated character, and a short string repeated: long enough, too little entropy.
        ("SECRET_KEY", "a" * 60 + "bcdef", "SECRET_KEY must be a random value"),
        ("SECRET_KEY", "Kx9#mQ2$vL" * 6, "SECRET_KEY must be a random value"),
        ("ALLOWED_HOSTS", "*", "ALLOWED_HOSTS must not contain '*'"),
        ("ALLOWED_HOSTS", "gatehouse.example,*", "ALLOWED_HOSTS must not contain '*'"),
        ("ALLOWED_HOSTS", None, "ALLOWED_HOSTS must name the host names"),
        ("DATABASE_URL", "sqlite:///var/prod.sqlite3", "DATABASE_URL must point to PostgreSQL"),
        ("DATABASE_URL", None, "DATABASE_URL must point to PostgreSQL"),
        ("GATEHOUSE_ISSUER", "http://gatehouse.example", "GATEHOUSE_ISSUER must be an https:// URL"),
        ("GATEHOUSE_ISSUER", None, "GATEHOUSE_ISSUER must be an https:// URL"),
        ("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend", "must deliver mail"),
        ("EMAIL_BACKEND", "django.core.mail.backends.dummy.EmailBackend", "must deliver mail"),
        ("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend", "must deliver mail"),
        ("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend", "must deliver mail"),
        ("AUDIT_SIGNING_KEY", None, "AUDIT_SIGNING_KEY (PEM) or an existing AUDIT_SIGNING_KEY_FILE"),
        ("AUDIT_SIGNING_KEY", "not-a-pem-" + secrets.token_urlsafe(32), "must be an Ed25519 private key"),
        ("AUDIT_SIGNING_KEY", _pem(ec.generate_private_key(ec.SECP256R1())), "must be an Ed25519 private"),
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
    if variable in ("SECRET_KEY", "AUDIT_SIGNING_KEY") and value:
        assert value not in result.stderr  # the refusal never repeats the secret
        assert value.splitlines()[1 if "PEM" in value else 0] not in result.stderr


@pytest.mark.parametrize(
    "contents", [b"", b"not a key", _pem(ec.generate_private_key(ec.SECP256R1())).encode()]
)
def test_production_refuses_a_key_file_that_is_not_an_ed25519_pem(production, tmp_path, contents):
    key_file = tmp_path / "audit.pem"
    key_file.write_bytes(contents)
    production.pop("AUDIT_SIGNING_KEY")
    production["AUDIT_SIGNING_KEY_FILE"] = str(key_file)
    result = run(production, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "AUDIT_SIGNING_KEY_FILE must hold an Ed25519 private key" in result.stderr


@pytest.mark.parametrize("secret_key", [secrets.token_hex(32), secrets.token_hex(25)])
def test_production_accepts_hex_secret_keys(production, secret_key):
    """openssl rand -hex 32 has only 16 distinct characters, yet 256 random bits: it must pass."""
    production["SECRET_KEY"] = secret_key
    result = start(production)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SECRET_KEY", "a" * 64),
        ("SECRET_KEY", "a" * 60 + "bcdef"),
        ("AUDIT_SIGNING_KEY", "not a pem"),
        ("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend"),
    ],
)
def test_check_deploy_fails_on_a_weak_value(production, variable, value):
    production[variable] = value
    result = run(production, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0 and "Refusing to start with DEBUG off" in result.stderr


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


# Opens the default run's database, writes to it (WAL on) and prints each file's mode under var/.
_MODES = (
    "import django, os, stat, json; django.setup(); from django.conf import settings; "
    "from django.db import connection; c = connection.cursor(); "
    "c.execute('CREATE TABLE IF NOT EXISTS t (x)'); c.execute('INSERT INTO t VALUES (1)'); "
    "from audit import signing; signing.private_key(); "
    "var = settings.VAR_DIR; modes = {'.': stat.S_IMODE(os.stat(var).st_mode)}; "
    "modes.update({n: stat.S_IMODE(os.stat(var / n).st_mode) for n in os.listdir(var)}); "
    "print(json.dumps(modes))"
)


def _default_run(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in READ_BY_SETTINGS}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="1", GATEHOUSE_VAR_DIR=str(tmp_path / "var"))
    return env


def _modes(env) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", _MODES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_default_run_keeps_var_private(tmp_path):
    """var/ holds sessions, TOTP seeds and the generated keys: owner only (0700 / 0600) under umask 022."""
    modes = _modes(_default_run(tmp_path))
    assert modes["."] == 0o700
    for name in (
        "gatehouse.sqlite3",
        "gatehouse.sqlite3-wal",
        "gatehouse.sqlite3-shm",
        "secret_key",
        "audit_signing_key.pem",
    ):
        assert modes[name] == 0o600, (name, oct(modes[name]))


def test_the_default_run_tightens_an_existing_var(tmp_path):
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    var.chmod(0o755)
    (var / "gatehouse.sqlite3").touch()
    (var / "gatehouse.sqlite3").chmod(0o644)
    (var / "secret_key").write_text(secrets.token_urlsafe(64))
    (var / "secret_key").chmod(0o644)
    modes = _modes(_default_run(tmp_path))
    assert modes["."] == 0o700
    assert modes["gatehouse.sqlite3"] == 0o600 and modes["secret_key"] == 0o600


@pytest.mark.parametrize(("debug", "required"), [("0", "True"), ("1", "False")])
def test_admins_need_a_second_factor_by_default_in_production(production, tmp_path, debug, required):
    env = production if debug == "0" else _default_run(tmp_path)
    code = "import django; django.setup(); from django.conf import settings as s; "
    code += "print(s.GATEHOUSE_ADMIN_REQUIRES_MFA)"
    result = run(env, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == required
