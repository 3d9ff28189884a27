"""Gatehouse's own settings, each with its default, read through one object: ``gatehouse_settings``.

Every setting is a ``GATEHOUSE_<NAME>`` entry of Django's settings (``config/settings.py`` fills most of
them from environment variables, see docs/deployment.md); code reads ``gatehouse_settings.<NAME>``, which
answers the Django setting when it is set and the default below otherwise.  Values are read on every
access, so ``override_settings`` and pytest-django's ``settings`` fixture apply at once.

Plug points are settings too: ``TOKEN_GRANT_TYPES`` maps each grant type the token endpoint accepts to the
dotted path of its oauthlib grant handler (docs/oauth.md, "Adding a grant type"), so another app adds a
grant type without the broker importing it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

PREFIX = "GATEHOUSE_"

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"

DEFAULTS: dict[str, Any] = {
    # The public base URL of this authorization server (RFC 8414 compares it byte for byte).
    "ISSUER": "http://127.0.0.1:8000",
    # Token lifetime when no capability or grant asks for less.
    "DEFAULT_TOKEN_LIFETIME": timedelta(seconds=300),
    # Answer a background agent's usual client-credentials request on the direct path (docs/oauth.md).
    "TOKEN_DIRECT_PATH": True,
    # grant_type -> dotted path of the oauthlib grant handler class the token endpoint dispatches it to.
    "TOKEN_GRANT_TYPES": {
        "authorization_code": "governance.oauth.grants.AuthorizationCodeGrant",
        "client_credentials": "governance.oauth.grants.ClientCredentialsGrant",
        "refresh_token": "governance.oauth.grants.RefreshTokenGrant",
        TOKEN_EXCHANGE: "governance.oauth.grants.TokenExchangeGrant",
    },
    # Approvals plug points (docs/approvals.md, "CIBA and bound tokens"): the URL name of the CIBA backchannel
    # authentication endpoint (advertised in the metadata when set), and the dotted path of the callable that
    # marks an approved token's request used, ``hook(*, jti, agent) -> bool | None`` (None: no request
    # behind this token; True: this use; False: used before or not usable).
    "BACKCHANNEL_AUTHENTICATION_ENDPOINT": "",
    "APPROVAL_USE_HOOK": "",
    # Access-token signing keys.
    "SIGNING_ALG": "ES256",
    "SIGNING_KEY_PUBLISH_SECONDS": 600,
    "SIGNING_KEY_CACHE_SECONDS": 5.0,
    "JWKS_MAX_AGE_SECONDS": 300,
    # private_key_jwt client assertions.
    "CLIENT_ASSERTION_MAX_AGE_SECONDS": 3600,
    "CLOCK_SKEW_SECONDS": 60,
    "CLIENT_JWKS_CACHE_SECONDS": 300,
    "CLIENT_JWKS_FETCH_TIMEOUT_SECONDS": 3,
    # Dynamic client registration.
    "DCR_ORGANIZATION": "",
    "DCR_OWNER": "",
    "DCR_OPEN": True,
    # Audit every successful introspection (refusals are always audited).
    "AUDIT_INTROSPECTION": False,
    # Refusals of unauthenticated callers recorded one by one per address and minute; beyond, they are
    # counted and summarised (``token.refusals_summarised``) so the audit log cannot be flooded.
    "REFUSAL_EVENTS_PER_MINUTE": 20,
    # DPoP (RFC 9449).
    "DPOP_IAT_WINDOW_SECONDS": 60,
    "DPOP_IAT_FUTURE_SECONDS": 5,
    "DPOP_NONCE_LIFETIME_SECONDS": 300,
    "DPOP_REPLAY_CACHE": "default",
    "DPOP_NONCE_REQUIRED": False,
    # Step-up and consent.
    "STEP_UP_MAX_AGE_SECONDS": 300,
    # Decision API (governance.enforcement): where rate limits, quotas and approved single-use calls are
    # counted (a Redis URL; empty: Django's cache), and how long a store may take before the call is refused.
    "RATE_LIMIT_REDIS_URL": "",
    "DECISION_STORE_TIMEOUT_SECONDS": 0.5,
    "CONSENT_LIFETIME": timedelta(days=30),
}


class GatehouseSettings:
    """Attribute access to ``GATEHOUSE_<NAME>`` settings with :data:`DEFAULTS`; unknown names raise."""

    def __getattr__(self, name: str) -> Any:
        try:
            default = DEFAULTS[name]
        except KeyError:
            raise AttributeError(f"no Gatehouse setting {name!r}") from None
        return getattr(settings, PREFIX + name, default)


gatehouse_settings = GatehouseSettings()
