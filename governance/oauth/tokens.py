"""Issued access tokens as the broker stored them: find one by its value, and whether it is still valid.

The rules every reader of a presented token applies (introspection, token exchange, the decision API):
:func:`find_record` answers only for an unexpired, unrevoked token with exactly this value, and
:func:`still_valid` re-checks its agent, its user and its grants now.  :func:`describe` is the RFC 7662
view of an active token.  No oauthlib, no HTTP.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache

from governance import auth_levels
from governance.conf import gatehouse_settings
from governance.models import TokenRecord
from governance.oauth import issuance_queries
from governance.oauth.scoping import evaluate_request


def checksum(value: str) -> str:
    """The SHA-256 hex digest under which DOT stores a token's value (RFC 9700 token storage)."""
    return hashlib.sha256(value.encode()).hexdigest()


def find_record(value: str) -> TokenRecord | None:
    """The record of an unexpired, unrevoked access token with exactly this value (None otherwise).

    A revoked token's row is gone and a tampered one matches no checksum, so both are None here.
    """
    if not isinstance(value, str) or not value:
        return None
    # One read: DOT's row and the record with its agent, user and tool server (issuance_queries).
    access_token, record = issuance_queries.presented_token(checksum(value))
    if access_token is None or access_token.is_expired():
        return None
    return record


def still_valid(record: TokenRecord) -> bool:
    """Its agent and user are active and its grants still cover every capability it carries."""
    agent = record.agent
    if not agent.is_active or (record.user is not None and not record.user.is_active):
        return False
    decision = evaluate_request(
        agent=agent, user=record.user, audience=record.tool_server, requested=record.capability_keys
    )
    return decision.ok


def describe(record: TokenRecord) -> dict:
    """RFC 7662's answer for an active token."""
    data = {
        "active": True,
        "iss": gatehouse_settings.ISSUER,
        "sub": record.subject,
        "client_id": record.client_id,
        "scope": record.capabilities,
        "aud": record.audience,
        "exp": int(record.expires_at.timestamp()),
        "iat": int(record.issued_at.timestamp()),
        "jti": record.jti,
        "token_type": "DPoP" if record.cnf_jkt else "Bearer",
    }
    if record.cnf_jkt:
        data["cnf"] = {"jkt": record.cnf_jkt}
    if record.act:
        data["act"] = record.act
    if record.acr:  # step-up: the person's authentication level and time, as in the JWT
        data["acr"] = record.acr
        data["amr"] = list(auth_levels.AMR.get(record.acr, []))
    if record.auth_time is not None:
        data["auth_time"] = int(record.auth_time.timestamp())
    return data


# ---- redeemed authorization codes (RFC 6749 §4.1.2: a replayed code revokes what it minted) ----------------
REDEEMED_CODE_SECONDS = 3600
"""How long the broker remembers what a redeemed code minted.  DOT deletes a code when it is redeemed, so a
replay is recognised only while this memory lasts; an hour covers any replay of a code intercepted in flight
(codes live a minute) and the refresh family is revoked whole, so later rotations die with it."""


def _redeemed_key(code: str) -> str:
    return "gh:redeemed-code:" + checksum(code)


def remember_redeemed_code(*, code: str, access_token: str, refresh_token: str | None) -> None:
    """Remember the checksums (never the values) of the tokens a code's redemption minted."""
    cache.set(
        _redeemed_key(code),
        {"access": checksum(access_token), "refresh": checksum(refresh_token) if refresh_token else None},
        REDEEMED_CODE_SECONDS,
    )


def redeemed_code(code: str) -> dict | None:
    """The checksums of the tokens ``code`` minted, if redeemed within :data:`REDEEMED_CODE_SECONDS`."""
    if not isinstance(code, str) or not code:
        return None
    return cache.get(_redeemed_key(code))
