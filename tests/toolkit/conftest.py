"""Toolkit fixtures: Gatehouse on a live server (real JWKS, real tokens), and tokens signed with its key."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from gatehouse_toolkit import JWKSCache, ToolServerGuard, ToolServerSettings
from governance.oauth import signing_keys
from governance.oauth.jwt_tokens import AccessTokenClaims, sign
from tests.oauth import dpop_client, helpers
from tests.oauth.conftest import http, issuer, world  # noqa: F401  (fixtures)

ISSUER = "https://gatehouse.example.test"
RESOURCE = "https://records.example.test/mcp"


class Clock:
    """A clock the test moves by hand (for caches and windows)."""

    def __init__(self, now: float | None = None):
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


def claims(**overrides) -> AccessTokenClaims:
    now = int(time.time())
    values = {
        "issuer": ISSUER,
        "subject": "user-7",
        "client_id": "agent-1",
        "audience": RESOURCE,
        "scope": ["records.read_own"],
        "issued_at": datetime.fromtimestamp(now, tz=UTC),
        "expires_at": datetime.fromtimestamp(now + 300, tz=UTC),
        "jti": uuid.uuid4().hex,
    }
    values.update(overrides)
    return AccessTokenClaims(**values)


@pytest.fixture
def signed(db):
    """Mint tokens with Gatehouse's real signing key (its JWKS then verifies them)."""

    def mint(**overrides) -> str:
        return sign(claims(**overrides))

    return mint


@pytest.fixture
def offline_guard(db):
    """A guard for RESOURCE holding Gatehouse's published keys (no fetch needed)."""
    settings = ToolServerSettings(issuer=ISSUER, resource=RESOURCE, scopes_supported=("records.read_own",))
    keys = JWKSCache(settings)
    keys.load(signing_keys.jwks())
    return ToolServerGuard(settings, keys=keys)


@pytest.fixture
def live(issuer, http, world):  # noqa: F811
    """Gatehouse on a live server: a background agent granted records.read_own, and a way to get tokens."""
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)

    class Live:
        def __init__(self):
            self.issuer, self.world, self.agent, self.key = issuer, world, agent, key

        def settings(self, **kwargs) -> ToolServerSettings:
            kwargs.setdefault("scopes_supported", ("records.read_own", "records.write_own"))
            return ToolServerSettings(issuer=issuer, resource=world.records.audience, **kwargs)

        def token(self, *, dpop_key=None, scope="records.read_own", resource=None) -> str:
            data = {
                "grant_type": "client_credentials",
                "scope": scope,
                "resource": resource or world.records.audience,
                **helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"),
            }
            headers = {}
            if dpop_key is not None:
                headers["DPoP"] = dpop_client.make_proof("POST", f"{issuer}/oauth/token/", dpop_key)
            issued = http.post(f"{issuer}/oauth/token/", data=data, headers=headers)
            assert issued.status_code == 200, issued.text
            return issued.json()["access_token"]

    return Live()
