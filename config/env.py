"""Reading settings from the environment, and refusing insecure production values."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
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


def secret_key(*, debug: bool, var_dir: Path) -> str:
    """SECRET_KEY from the environment; in debug runs, generated once and kept under var/."""
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    if not debug:
        raise ImproperlyConfigured("SECRET_KEY must be set in the environment when DEBUG is off.")
    key_file = var_dir / "secret_key"
    if not key_file.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(64))
    return key_file.read_text().strip()


def database(*, var_dir: Path) -> dict:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        var_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{var_dir / 'gatehouse.sqlite3'}"
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
        # Django's own queries bind client-side and are never prepared.  Only the token endpoint's two
        # statements (governance.oauth.issuance_queries.prepared_cursor) ask for server-side prepared
        # statements; 0 = at once.  Off (None) behind a pooler that cannot keep them (PgBouncer < 1.21 in
        # transaction mode).
        prepared = flag("DATABASE_PREPARED_STATEMENTS", default=True)
        config["OPTIONS"].setdefault("prepare_threshold", 0 if prepared else None)
    return config


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
    if len(secret_key) < 50 or len(set(secret_key)) < 5 or secret_key.startswith("django-insecure"):
        problems.append("SECRET_KEY must be a random value of at least 50 characters.")
    if not allowed_hosts:
        problems.append("ALLOWED_HOSTS must name the host names Gatehouse is served under.")
    if "*" in allowed_hosts:
        problems.append("ALLOWED_HOSTS must not contain '*'.")
    if database["ENGINE"] != "django.db.backends.postgresql":
        problems.append("DATABASE_URL must point to PostgreSQL in production.")
    if urlsplit(issuer).scheme != "https":
        problems.append("GATEHOUSE_ISSUER must be an https:// URL in production.")
    if email_backend.endswith(("console.EmailBackend", "dummy.EmailBackend", "OutboxEmailBackend")):
        problems.append("EMAIL_BACKEND must deliver mail in production (approvals are sent by email).")
    if audit_signing_key_file is not None and not audit_signing_key and not audit_signing_key_file.is_file():
        problems.append(
            "AUDIT_SIGNING_KEY (PEM) or an existing AUDIT_SIGNING_KEY_FILE must hold the key signing audit "
            "checkpoints."
        )
    if problems:
        raise ImproperlyConfigured("Refusing to start with DEBUG off: " + " ".join(problems))
