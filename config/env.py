"""Reading settings from the environment, and refusing insecure production values."""

from __future__ import annotations

import math
import os
import secrets
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def text(name: str, *, default: str) -> str:
    return os.environ.get(name, default)


def flag(name: str, *, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0/true/false/yes/no/on/off, not {raw!r}.")


def integer(name: str, *, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}.") from None


def csv(name: str, *, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def path(name: str, default: Path, *, base: Path) -> Path:
    raw = os.environ.get(name)
    if not raw:
        return Path(default)
    candidate = Path(raw)
    return candidate if candidate.is_absolute() else base / candidate


def private_dir(directory: Path) -> Path:
    """Create ``directory`` (the default run's var/) readable by its owner only, and tighten it if it exists.

    It holds the SQLite database (sessions, TOTP seeds), the generated secret key and audit signing key.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        directory.chmod(0o700)
    return directory


def private_file(file: Path) -> Path:
    """Create ``file`` empty with mode 0600 when missing; tighten it to 0600 when it exists."""
    private_dir(file.parent)
    try:
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if file.stat().st_mode & 0o077:
            file.chmod(0o600)
    return file


def secret_key(*, debug: bool, var_dir: Path) -> str:
    """SECRET_KEY from the environment; in debug runs, generated once and kept under var/ (mode 0600)."""
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    if not debug:
        raise ImproperlyConfigured("SECRET_KEY must be set in the environment when DEBUG is off.")
    key_file = var_dir / "secret_key"
    if not key_file.exists():
        private_dir(var_dir)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(64))
    return private_file(key_file).read_text().strip()


def database(*, var_dir: Path) -> dict:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        # SQLite gives its WAL and shared-memory files the database file's mode: 0600 covers all three.
        url = f"sqlite:///{private_file(var_dir / 'gatehouse.sqlite3')}"
    config = dj_database_url.parse(url, conn_max_age=integer("CONN_MAX_AGE", default=60))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Take the write lock at BEGIN so concurrent writers queue instead of failing mid-transaction,
        # and use WAL so readers never block the writer.
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        }
        config["TEST"] = {"NAME": str(var_dir / "test.sqlite3")}
    elif config["ENGINE"] == "django.db.backends.postgresql":
        config.setdefault("OPTIONS", {})
        # Django's own queries bind client-side and are never prepared.  Only the hot paths' statements
        # (config.db.prepared_cursor: the token endpoint, the decision API, the audit append) ask for
        # server-side prepared statements; 0 = at once.  Off (None) behind a pooler that cannot keep them
        # (PgBouncer < 1.21 in transaction mode).
        prepared = flag("DATABASE_PREPARED_STATEMENTS", default=True)
        config["OPTIONS"].setdefault("prepare_threshold", 0 if prepared else None)
    return config


# Fewest bits a SECRET_KEY must carry by a per-character (Shannon) estimate, fewest distinct characters,
# and how much of its length must survive compression (a short string repeated compresses to little).
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_BITS = 128
SECRET_KEY_MIN_DISTINCT = 10
SECRET_KEY_MIN_COMPRESSED_RATIO = 0.6

# Django's backends that deliver nothing: they print, drop, keep in memory or write files.
NON_DELIVERING_MAIL_BACKENDS = frozenset(
    f"django.core.mail.backends.{name}.EmailBackend" for name in ("console", "dummy", "locmem", "filebased")
)


def secret_key_is_weak(key: str) -> bool:
    """Too short, Django's placeholder, or too little entropy (few distinct characters, a repetition).

    A heuristic that refuses obviously made-up values; a key from ``secrets`` (or ``openssl rand -hex 32``)
    always passes.
    """
    if len(key) < SECRET_KEY_MIN_LENGTH or key.startswith("django-insecure"):
        return True
    counts = Counter(key)
    bits = sum(n * math.log2(len(key) / n) for n in counts.values())
    compressed = len(zlib.compress(key.encode(), 9))
    return (
        len(counts) < SECRET_KEY_MIN_DISTINCT
        or bits < SECRET_KEY_MIN_BITS
        or compressed < SECRET_KEY_MIN_COMPRESSED_RATIO * len(key.encode())
    )


def is_ed25519_private_pem(pem: bytes) -> bool:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnicodeError):
        return False
    return isinstance(key, Ed25519PrivateKey)


def _audit_signing_key_problem(key: str, key_file: Path | None) -> str | None:
    if key:
        if not is_ed25519_private_pem(key.encode()):
            return "AUDIT_SIGNING_KEY must be an Ed25519 private key in PEM form (PKCS#8, unencrypted)."
        return None
    if key_file is None:
        return None
    if not key_file.is_file():
        return (
            "AUDIT_SIGNING_KEY (PEM) or an existing AUDIT_SIGNING_KEY_FILE must hold the key signing audit "
            "checkpoints."
        )
    try:
        contents = key_file.read_bytes()
    except OSError:
        contents = b""
    if not is_ed25519_private_pem(contents):
        return "AUDIT_SIGNING_KEY_FILE must hold an Ed25519 private key in PEM form (PKCS#8, unencrypted)."
    return None


def refuse_insecure_production(
    *,
    secret_key: str,
    allowed_hosts: list[str],
    database: dict,
    issuer: str,
    email_backend: str,
    audit_signing_key: str = "",
    audit_signing_key_file: Path | None = None,
) -> None:
    """Stop start-up when DEBUG is off and a value would make production insecure."""
    problems = []
    if secret_key_is_weak(secret_key):
        problems.append("SECRET_KEY must be a random value of at least 50 characters.")
    if not allowed_hosts:
        problems.append("ALLOWED_HOSTS must name the host names Gatehouse is served under.")
    if "*" in allowed_hosts:
        problems.append("ALLOWED_HOSTS must not contain '*'.")
    if database["ENGINE"] != "django.db.backends.postgresql":
        problems.append("DATABASE_URL must point to PostgreSQL in production.")
    if urlsplit(issuer).scheme != "https":
        problems.append("GATEHOUSE_ISSUER must be an https:// URL in production.")
    if email_backend in NON_DELIVERING_MAIL_BACKENDS or email_backend.endswith(
        ("console.EmailBackend", "dummy.EmailBackend", "OutboxEmailBackend")
    ):
        problems.append("EMAIL_BACKEND must deliver mail in production (approvals are sent by email).")
    key_problem = _audit_signing_key_problem(audit_signing_key, audit_signing_key_file)
    if key_problem:
        problems.append(key_problem)
    if problems:
        raise ImproperlyConfigured("Refusing to start with DEBUG off: " + " ".join(problems))
