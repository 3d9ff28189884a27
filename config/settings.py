"""Gatehouse settings: one module, driven by environment variables.

Default run (``DEBUG=1``): SQLite under ``var/``, Celery tasks run in-process, mail to the console,
a secret key generated once under ``var/``.  Production (``DEBUG`` off): every insecure value is refused
at start-up by :func:`config.env.refuse_insecure_production`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from config import env
from governance.conf import DEFAULTS as _GATEHOUSE_DEFAULTS

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env.path("GATEHOUSE_VAR_DIR", BASE_DIR / "var", base=BASE_DIR)

DEBUG = env.flag("DEBUG", default=False)
SECRET_KEY = env.secret_key(debug=DEBUG, var_dir=VAR_DIR)
ALLOWED_HOSTS = env.csv("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.csv("CSRF_TRUSTED_ORIGINS", default=[])

# The issuer is the public base URL of this authorization server (RFC 8414 compares it byte for byte).
GATEHOUSE_ISSUER = env.text("GATEHOUSE_ISSUER", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "oauth2_provider",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",  # recovery codes (governance.services.mfa)
    "audit",
    "governance",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "audit.context.RequestContextMiddleware",
    "config.input_guard.QueryStringGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "governance.mfa.middleware.AdminSecondFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "approvals.context.pending_approvals",
                "governance.portal.context.navigation",
            ],
        },
    },
]

DATABASES = {"default": env.database(var_dir=VAR_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "governance.User"

REDIS_URL = env.text("REDIS_URL", default="")
if REDIS_URL:
    # Bounded waits: a Redis that hangs must fail the request (closed), not stall it.
    _redis_timeout = env.integer("REDIS_SOCKET_TIMEOUT_SECONDS", default=2)
    CACHES = {
        "default": {
            "BACKEND": "config.redis_cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_timeout": _redis_timeout, "socket_connect_timeout": _redis_timeout},
        }
    }
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "gatehouse"}
    }

# Celery: Redis as broker when configured; otherwise tasks run in-process (eagerly) in the default run.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE = {
    "audit-checkpoint": {
        "task": "audit.tasks.create_checkpoint",
        "schedule": env.integer("AUDIT_CHECKPOINT_INTERVAL_SECONDS", default=300),
    },
    # Approvals (docs/approvals.md): resend what stayed unsent, remind before expiry, expire stale requests.
    "approvals-resend-unsent": {
        "task": "approvals.tasks.resend_unsent",
        "schedule": env.integer("GATEHOUSE_APPROVAL_RESEND_INTERVAL_SECONDS", default=30),
    },
    "approvals-remind": {
        "task": "approvals.tasks.remind_pending",
        "schedule": env.integer("GATEHOUSE_APPROVAL_REMIND_INTERVAL_SECONDS", default=60),
    },
    "approvals-expire": {
        "task": "approvals.tasks.expire_stale",
        "schedule": env.integer("GATEHOUSE_APPROVAL_EXPIRE_INTERVAL_SECONDS", default=30),
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The portal's one hand-written stylesheet and its small scripts (no front-end build step).
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", BASE_DIR / "staticfiles", base=BASE_DIR)

LOGIN_URL = "governance:login"
# Django's own (every password sign-in, portal and admin, throttled and audited: governance.auth_backends),
# then the permissions that follow from a Gatehouse role (governance/permissions.py).
AUTHENTICATION_BACKENDS = [
    "governance.auth_backends.ThrottledModelBackend",
    "governance.permissions.RolePermissionBackend",
]

# Password sign-in settings (governance.services.sign_in): after this many attempts in the window an account,
# or an address, is refused without a password check until the window ends.  Counters live in the cache
# (Redis with REDIS_URL).
GATEHOUSE_SIGN_IN_WINDOW_SECONDS = env.integer("GATEHOUSE_SIGN_IN_WINDOW_SECONDS", default=900)
GATEHOUSE_SIGN_IN_MAX_FAILURES_PER_ACCOUNT = env.integer(
    "GATEHOUSE_SIGN_IN_MAX_FAILURES_PER_ACCOUNT", default=10
)
GATEHOUSE_SIGN_IN_MAX_FAILURES_PER_ADDRESS = env.integer(
    "GATEHOUSE_SIGN_IN_MAX_FAILURES_PER_ADDRESS", default=30
)

# Mail: the console plus a folder the development outbox page reads in the default run; SMTP otherwise.
EMAIL_BACKEND = env.text(
    "EMAIL_BACKEND",
    default="approvals.dev_mail.OutboxEmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env.text("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.integer("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.text("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.text("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.flag("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.flag("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.integer("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.text("DEFAULT_FROM_EMAIL", default="gatehouse@localhost")

# Approvals (docs/approvals.md).  A claimed email is re-sent by the beat job once its lease lapses: the
# lease must outlast one SMTP conversation (EMAIL_TIMEOUT per step).  Links die with their request, and at
# the latest this long after they were sent.  Reminders go out this long before a request expires.
GATEHOUSE_APPROVAL_MAIL_LEASE_SECONDS = env.integer("GATEHOUSE_APPROVAL_MAIL_LEASE_SECONDS", default=120)
GATEHOUSE_APPROVAL_MAIL_MAX_ATTEMPTS = env.integer("GATEHOUSE_APPROVAL_MAIL_MAX_ATTEMPTS", default=8)
GATEHOUSE_APPROVAL_LINK_MAX_AGE_SECONDS = env.integer(
    "GATEHOUSE_APPROVAL_LINK_MAX_AGE_SECONDS", default=86400
)
GATEHOUSE_APPROVAL_REMIND_BEFORE_SECONDS = env.integer(
    "GATEHOUSE_APPROVAL_REMIND_BEFORE_SECONDS", default=600
)
GATEHOUSE_APPROVAL_POLL_INTERVAL_SECONDS = env.integer("GATEHOUSE_APPROVAL_POLL_INTERVAL_SECONDS", default=5)
GATEHOUSE_GRANT_APPROVAL_EXPIRY_SECONDS = env.integer(
    "GATEHOUSE_GRANT_APPROVAL_EXPIRY_SECONDS", default=86400
)
# The development outbox page (/portal/approvals/outbox/, DEBUG only) reads the mail saved here.
GATEHOUSE_DEV_OUTBOX_DIR = env.path("GATEHOUSE_DEV_OUTBOX_DIR", VAR_DIR / "outbox", base=BASE_DIR)

# Security headers and cookies; production values are enforced, not merely suggested.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.integer("SESSION_COOKIE_AGE", default=8 * 3600)
if not DEBUG:
    SECURE_SSL_REDIRECT = env.flag("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    if env.flag("SECURE_PROXY_SSL_HEADER", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Step-up (governance.auth_levels): how recent a second factor must be for capabilities and portal actions
# marked for step-up; the issuer name shown in authenticator apps; seconds of back-off after the first wrong
# code (doubling with each further one, django-otp's throttling).
GATEHOUSE_STEP_UP_MAX_AGE_SECONDS = env.integer("GATEHOUSE_STEP_UP_MAX_AGE_SECONDS", default=300)
OTP_TOTP_ISSUER = env.text("GATEHOUSE_STEP_UP_TOTP_ISSUER", default="Gatehouse")
OTP_TOTP_THROTTLE_FACTOR = env.integer("GATEHOUSE_STEP_UP_THROTTLE_SECONDS", default=1)
OTP_STATIC_THROTTLE_FACTOR = OTP_TOTP_THROTTLE_FACTOR
# Every admin page needs a session at the second-factor level (any age; sensitive actions want it fresh).
# On unless DEBUG: the default run's demo admin has no authenticator app.
GATEHOUSE_ADMIN_REQUIRES_MFA = env.flag("GATEHOUSE_ADMIN_REQUIRES_MFA", default=not DEBUG)

# Number of trusted reverse proxies in front of Gatehouse; the client IP is read from X-Forwarded-For
# only through that many hops.  0 means REMOTE_ADDR is the client.
GATEHOUSE_TRUSTED_PROXY_COUNT = env.integer("GATEHOUSE_TRUSTED_PROXY_COUNT", default=0)

# Audit: Ed25519 key for signed checkpoints (PEM in AUDIT_SIGNING_KEY, or a file generated under var/).
AUDIT_SIGNING_KEY = env.text("AUDIT_SIGNING_KEY", default="")
AUDIT_SIGNING_KEY_FILE = env.path("AUDIT_SIGNING_KEY_FILE", VAR_DIR / "audit_signing_key.pem", base=BASE_DIR)
AUDIT_CHECKPOINT_EVERY = env.integer("AUDIT_CHECKPOINT_EVERY", default=0)
# Independent hash chains appends spread over on PostgreSQL (1–64); SQLite always uses one.
AUDIT_CHAIN_LANES = env.integer("AUDIT_CHAIN_LANES", default=8)
# Who may search the audit log, and which organization's events they see (audit.access).
AUDIT_READER = "governance.audit_readers.audit_reader"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "governance.api_errors.exception_handler",
}

# django-oauth-toolkit: every RFC 9700 compliance gate on; nothing is granted by default.
OAUTH2_PROVIDER = {
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "PKCE_REQUIRED": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "ROTATE_REFRESH_TOKEN": True,
    "DEFAULT_SCOPES": [],
    "ACCESS_TOKEN_EXPIRE_SECONDS": 300,
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    # A refresh token dies this long after its access token expired; grants are re-checked on every refresh.
    "REFRESH_TOKEN_EXPIRE_SECONDS": 8 * 3600,
    # http is allowed for loopback redirect URIs of native/CLI clients (RFC 8252 §7.3, any port);
    # governance.oauth.validator refuses any other http redirect URI outside DEBUG.
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https", "http"],
    "ALLOW_LOCALHOST_LOOPBACK": False,
    # The issuer in metadata and the RFC 9207 `iss` response parameter (OIDC itself stays off).
    "OIDC_ENABLED": False,
    "OIDC_ISS_ENDPOINT": GATEHOUSE_ISSUER,
    "OAUTH2_SERVER_CLASS": "governance.oauth.server.GatehouseServer",
    "OAUTH2_VALIDATOR_CLASS": "governance.oauth.validator.GatehouseValidator",
    "SCOPES_BACKEND_CLASS": "governance.oauth.scopes_backend.CapabilityScopes",
    "ERROR_RESPONSE_WITH_SCOPES": False,
    "DCR_ENABLED": False,
    "CIMD_ENABLED": False,
    # Client secrets are 128 random characters: a salted SHA-256 resists guessing as well as PBKDF2 does,
    # at microseconds instead of ~350 ms per token request (see docs/oauth.md).
    "CLIENT_SECRET_HASHER": "gatehouse_sha256",
}
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "oauth2_provider.RefreshToken"
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "oauth2_provider.IDToken"
OAUTH2_PROVIDER_GRANT_MODEL = "oauth2_provider.Grant"
GATEHOUSE_DEFAULT_TOKEN_LIFETIME = timedelta(seconds=300)
# A background agent's client-credentials request is answered in two round trips (governance.oauth.direct)
# when it passes every check; off sends every request through DOT and oauthlib (same answers, slower).
GATEHOUSE_TOKEN_DIRECT_PATH = env.flag("GATEHOUSE_TOKEN_DIRECT_PATH", default=True)
# CIBA poll mode and bound single-use tokens come from the approvals app, plugged in by name
# (docs/approvals.md, "CIBA and bound tokens"); the broker never imports approvals.
GATEHOUSE_TOKEN_GRANT_TYPES = {
    **_GATEHOUSE_DEFAULTS["TOKEN_GRANT_TYPES"],
    "urn:openid:params:grant-type:ciba": "approvals.ciba.CibaGrant",
}
GATEHOUSE_BACKCHANNEL_AUTHENTICATION_ENDPOINT = "ciba:bc-authorize"
GATEHOUSE_APPROVAL_USE_HOOK = "approvals.ciba.use_approved_token"
# DOT's E003 objects to "http" in ALLOWED_REDIRECT_URI_SCHEMES.  It is there only for RFC 8252 loopback
# redirects: GatehouseValidator.validate_redirect_uri and governance.services.agents refuse any other http
# redirect URI when DEBUG is off (tests/test_settings.py runs check --deploy).
SILENCED_SYSTEM_CHECKS = ["oauth2_provider.E003"]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
    # Only for OAuth client secrets (CLIENT_SECRET_HASHER above); never the first entry, so never for people.
    "governance.oauth.hashers.ClientSecretSHA256Hasher",
]
# Token broker (governance.oauth; docs/oauth.md).
GATEHOUSE_SIGNING_ALG = env.text("GATEHOUSE_SIGNING_ALG", default="ES256")
# A rotated-in signing key is published this long before it signs (JWKS caches must see it first).
GATEHOUSE_SIGNING_KEY_PUBLISH_SECONDS = env.integer("GATEHOUSE_SIGNING_KEY_PUBLISH_SECONDS", default=600)
GATEHOUSE_JWKS_MAX_AGE_SECONDS = env.integer("GATEHOUSE_JWKS_MAX_AGE_SECONDS", default=300)
# private_key_jwt: an assertion may live at most this long (common clients use up to an hour), plus skew.
GATEHOUSE_CLIENT_ASSERTION_MAX_AGE_SECONDS = 3600
GATEHOUSE_CLOCK_SKEW_SECONDS = 60
GATEHOUSE_CLIENT_JWKS_CACHE_SECONDS = 300
GATEHOUSE_CLIENT_JWKS_FETCH_TIMEOUT_SECONDS = 3
# Dynamic client registration: the organization new clients join and who owns them (empty: its first admin).
GATEHOUSE_DCR_ORGANIZATION = env.text("GATEHOUSE_DCR_ORGANIZATION", default="")
GATEHOUSE_DCR_OWNER = env.text("GATEHOUSE_DCR_OWNER", default="")
GATEHOUSE_DCR_OPEN = env.flag("GATEHOUSE_DCR_OPEN", default=True)
# Audit every successful introspection (one event per tool call: heavy); refusals are always audited.
GATEHOUSE_AUDIT_INTROSPECTION = env.flag("GATEHOUSE_AUDIT_INTROSPECTION", default=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.text("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if not DEBUG:
    env.refuse_insecure_production(
        secret_key=SECRET_KEY,
        allowed_hosts=ALLOWED_HOSTS,
        database=DATABASES["default"],
        issuer=GATEHOUSE_ISSUER,
        email_backend=EMAIL_BACKEND,
        audit_signing_key=AUDIT_SIGNING_KEY,
        audit_signing_key_file=AUDIT_SIGNING_KEY_FILE,
    )

# DPoP (RFC 9449): accepted proof age (past / future skew), nonce window, and the cache alias holding
# seen jti values (Redis when REDIS_URL is set; proofs are refused when it cannot answer).
GATEHOUSE_DPOP_IAT_WINDOW_SECONDS = env.integer("GATEHOUSE_DPOP_IAT_WINDOW_SECONDS", default=60)
GATEHOUSE_DPOP_IAT_FUTURE_SECONDS = env.integer("GATEHOUSE_DPOP_IAT_FUTURE_SECONDS", default=5)
GATEHOUSE_DPOP_NONCE_LIFETIME_SECONDS = env.integer("GATEHOUSE_DPOP_NONCE_LIFETIME_SECONDS", default=300)
GATEHOUSE_DPOP_REPLAY_CACHE = env.text("GATEHOUSE_DPOP_REPLAY_CACHE", default="default")
# Require a server nonce (DPoP-Nonce) in every proof at the token endpoint.
GATEHOUSE_DPOP_NONCE_REQUIRED = env.flag("GATEHOUSE_DPOP_NONCE_REQUIRED", default=False)

# Decision API (governance.enforcement; docs/decision-api.md).  Rate limits, quotas and approved single-use
# calls are counted in this Redis (default REDIS_URL; empty: Django's cache, exact within one process only).
# A store that does not answer within the timeout denies the call as "unavailable".
GATEHOUSE_RATE_LIMIT_REDIS_URL = env.text("GATEHOUSE_RATE_LIMIT_REDIS_URL", default=REDIS_URL)
GATEHOUSE_DECISION_STORE_TIMEOUT_SECONDS = float(
    env.text("GATEHOUSE_DECISION_STORE_TIMEOUT_SECONDS", default="0.5")
)
