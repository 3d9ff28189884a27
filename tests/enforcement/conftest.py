"""Fixtures for the decision API: the broker's live server and world, tool servers as callers, and real
tokens issued over HTTP (client credentials for a background agent, code + PKCE for a user)."""

from __future__ import annotations

import base64
import secrets
import uuid

import httpx
import pytest
from oauth2_provider.models import get_application_model

from tests.oauth import conftest as oauth_fixtures
from tests.oauth import dpop_client, helpers

# The broker's end-to-end fixtures: the live server as issuer, an HTTP client, the organization.
issuer, http, world = oauth_fixtures.issuer, oauth_fixtures.http, oauth_fixtures.world

TOOL_URL = "https://records.example.test/mcp"


@pytest.fixture(autouse=True)
def _isolated_limits(settings):
    """Counters in this process's cache unless a test points the limiter at a Redis of its own."""
    settings.GATEHOUSE_RATE_LIMIT_REDIS_URL = ""
    from django.core.cache import cache

    cache.clear()


class Caller:
    """A tool server calling the decision API with its own credentials."""

    def __init__(self, http, issuer, tool_server, *, key=None, secret=None):
        self.http, self.issuer, self.tool_server = http, issuer, tool_server
        self.key, self.secret = key, secret

    def headers(self, path: str) -> dict:
        client_id = self.tool_server.application.client_id
        if self.secret is not None:
            basic = base64.b64encode(f"{client_id}:{self.secret}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        assertion = helpers.client_assertion(self.key, client_id, self.issuer + path, lifetime=60)
        return {"Authorization": f"Bearer {assertion}"}

    def post(self, path: str, body, **kwargs) -> httpx.Response:
        headers = {**self.headers(path), **kwargs.pop("headers", {})}
        if isinstance(body, bytes | str):
            headers.setdefault("Content-Type", "application/json")
            return self.http.post(self.issuer + path, content=body, headers=headers)
        return self.http.post(self.issuer + path, json=body, headers=headers)

    def evaluate(self, body) -> httpx.Response:
        return self.post("/access/v1/evaluation", body)

    def decide(self, token, key="records.read_own", parameters=None, *, dpop=None, http=None, tool="tool"):
        response = self.evaluate(evaluation(token, key, parameters, dpop=dpop, http=http, tool=tool))
        assert response.status_code == 200, response.text
        return response.json()


def evaluation(token, key="records.read_own", parameters=None, *, dpop=None, http=None, tool="tool"):
    properties = {"token": token}
    if dpop is not None:
        properties["dpop"] = dpop
    body = {
        "subject": {"type": "agent", "properties": properties},
        "action": {"name": key},
        "resource": {"type": "tool", "id": tool, "properties": {"parameters": parameters or {}}},
    }
    if http is not None:
        body["context"] = {"http": http}
    return body


def secret_tool_server(tool_server, *, owner) -> str:
    """Give a tool server an application with a client secret (client_secret_basic)."""
    Application = get_application_model()
    secret = secrets.token_urlsafe(48)
    application = Application(
        name=f"{tool_server.name} (tool server, secret)",
        user=owner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    application.client_secret = secret
    application.save()
    tool_server.application = application
    tool_server.token_endpoint_auth_method = "client_secret_basic"
    tool_server.save()
    return secret


@pytest.fixture
def records(issuer, http, world):
    """The records tool server as a private_key_jwt caller."""
    return Caller(http, issuer, world.records, key=world.tool_server_key(world.records))


@pytest.fixture
def calendar(issuer, http, world):
    """The calendar tool server as a client-secret caller."""
    return Caller(http, issuer, world.calendar, secret=secret_tool_server(world.calendar, owner=world.admin))


def service_token(http, issuer, world, agent, key, scope="records.read_own", *, dpop_key=None, audience=None):
    """A client-credentials token for a background agent (DPoP-bound with ``dpop_key``)."""
    data = {"grant_type": "client_credentials", "scope": scope}
    data["resource"] = audience or world.records.audience
    data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
    headers = {}
    if dpop_key is not None:
        headers["DPoP"] = dpop_client.make_proof("POST", f"{issuer}/oauth/token/", dpop_key)
    response = http.post(f"{issuer}/oauth/token/", data=data, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def user_token(issuer, world, agent, key, user, scope="records.read_own", *, audience=None) -> str:
    """A token for ``user`` by authorization code + PKCE: the user signs in and presses Allow."""
    with httpx.Client(follow_redirects=False, timeout=20) as browser:
        helpers.login(browser, user)
        verifier, challenge = helpers.pkce_pair()
        answer = helpers.authorize(
            browser,
            issuer,
            client_id=agent.application.client_id,
            scope=scope,
            resource=audience or world.records.audience,
            challenge=challenge,
            state=uuid.uuid4().hex,
        )
        query = helpers.code_from(answer)
        data = {
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": helpers.REDIRECT_URI,
            "code_verifier": verifier,
        }
        data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
        response = browser.post(f"{issuer}/oauth/token/", data=data)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]
