"""The official MCP Python SDK (``mcp`` on PyPI), unmodified, against Gatehouse over real HTTP.

Dynamic registration is the realistic path for an MCP client nobody here configured: it registers itself
without an initial access token, so Gatehouse creates a *pending* agent with an empty ceiling.  The test
shows that the pending agent cannot be authorized, then plays the admin (the agent_set_ceiling and
agent_activate services, as the admin screens do) and the user (sign-in and consent through real form
POSTs with CSRF), and lets the SDK finish: code + PKCE with ``resource``, then a refresh.
"""

from __future__ import annotations

import json
import time
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import anyio
import httpx
import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from django.db import connection
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import PrivateKeyJWTOAuthProvider, SignedJWTParameters
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from audit.models import AuditEvent
from governance.models import Agent, Grant
from governance.models.agents import AgentStatus
from governance.services import agent_activate, agent_set_ceiling
from tests.interop.conftest import PASSWORD
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)

CALLBACK = "http://127.0.0.1:8765/callback"


class MemoryStorage:
    def __init__(self):
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class HiddenInputs(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.fields: dict[str, str] = {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "hidden" and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""


class Person:
    """A browser (httpx, cookies kept) driven by the test: signs in, reads pages, presses buttons."""

    def __init__(self, base: str, username: str):
        self.base, self.username = base, username
        self.browser = httpx.Client(follow_redirects=False, timeout=20)
        self.pages: list[httpx.Response] = []

    def open(self, url: str) -> httpx.Response:
        response = self.browser.get(url)
        if response.status_code == 302 and "/portal/login/" in response.headers["location"]:
            login_url = urljoin(self.base, response.headers["location"])
            page = self.browser.get(login_url)
            fields = HiddenInputs(page.text).fields
            assert "csrfmiddlewaretoken" in fields
            signed_in = self.browser.post(
                login_url, data={**fields, "username": self.username, "password": PASSWORD}
            )
            assert signed_in.status_code == 302, signed_in.text[:500]
            response = self.browser.get(urljoin(self.base, signed_in.headers["location"]))
        self.pages.append(response)
        return response

    def press_allow(self, page: httpx.Response) -> httpx.Response:
        fields = HiddenInputs(page.text).fields
        assert fields.get("csrfmiddlewaretoken"), "the consent form carries a CSRF token"
        return self.browser.post(str(page.url), data={**fields, "allow": "Authorize"})


def test_mcp_sdk_registers_waits_for_activation_authorizes_with_pkce_and_refreshes(
    clinic, stub, issuer, settings
):
    settings.GATEHOUSE_DCR_ORGANIZATION = "clinic"
    settings.GATEHOUSE_DCR_OPEN = True
    alice = Person(issuer, "alice")
    seen: dict = {}

    def user_and_admin(authorization_url: str) -> None:
        query = parse_qs(urlsplit(authorization_url).query)
        seen["authorize_query"] = query
        agent = Agent.objects.get(application__client_id=query["client_id"][0])
        assert agent.status == AgentStatus.PENDING and not agent.ceiling.exists()
        # A pending agent cannot be authorized: a plain page, nothing for the client.
        refused = alice.open(authorization_url)
        assert refused.status_code == 403 and "pending" in refused.text.lower()
        # The admin reviews the registration, gives it a ceiling and activates it.
        agent_set_ceiling(actor=clinic.admin, agent=agent, capabilities=[clinic.read])
        agent_activate(actor=clinic.admin, agent=agent, reason="reviewed the registration")
        page = alice.open(authorization_url)
        assert page.status_code == 200, page.text[:500]
        assert 'data-status="consent"' in page.text and clinic.records.name in page.text
        answer = alice.press_allow(page)
        assert answer.status_code == 302, answer.text[:500]
        seen["callback"] = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}

    def in_worker_thread(url: str) -> None:
        try:
            user_and_admin(url)
        finally:
            connection.close()  # this thread's database connection, so the test database can be dropped

    async def redirect_handler(url: str) -> None:
        await anyio.to_thread.run_sync(in_worker_thread, url)

    async def callback_handler() -> AuthorizationCodeResult:
        callback = seen["callback"]
        return AuthorizationCodeResult(
            code=callback["code"], state=callback.get("state"), iss=callback.get("iss")
        )

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=stub.resource,
        client_metadata=OAuthClientMetadata(client_name="Interop MCP client", redirect_uris=[CALLBACK]),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )

    async def session():
        async with httpx2.AsyncClient(auth=provider, timeout=30) as client:
            first = await client.get(stub.resource)
            assert first.status_code == 200, first.text
            # Let the access token lapse on the client side: the SDK must refresh, not re-authorize.
            provider.context.token_expiry_time = time.time() - 1
            second = await client.get(stub.resource)
            assert second.status_code == 200, second.text

    anyio.run(session)

    client_id = storage.client_info.client_id
    agent = Agent.objects.get(application__client_id=client_id)
    query = seen["authorize_query"]
    assert query["code_challenge_method"] == ["S256"] and query["resource"] == [stub.resource]
    assert seen["callback"]["iss"] == issuer  # RFC 9207, checked by the SDK too

    first, second = stub.accepted
    for claims in (first, second):
        assert claims["aud"] == stub.resource
        assert claims["client_id"] == client_id
        assert claims["sub"] == str(clinic.member.pk)
        assert set(claims["scope"].split()) <= {"records.read_own"}
    assert first["jti"] != second["jti"]
    granted = set(
        Grant.objects.active()
        .filter(agent=agent, user=clinic.member)
        .values_list("capability__key", flat=True)
    )
    assert granted == {"records.read_own"}

    actions = list(
        AuditEvent.objects.filter(agent_id=agent.pk).order_by("seq").values_list("action", flat=True)
    )
    for expected in (
        "client.registered",
        "agent.activated",
        "consent.given",
        "token.issued",
        "token.refreshed",
    ):
        assert expected in actions, actions
    assert actions.index("agent.activated") < actions.index("consent.given") < actions.index("token.issued")
    issued = AuditEvent.objects.get(agent_id=agent.pk, action="token.issued")
    assert json.loads(issued.parameters)["jti"] == first["jti"]
    assert issued.on_behalf_of_id == clinic.member.pk
    refused = AuditEvent.objects.filter(agent_id=agent.pk, action="token.refused").values_list(
        "parameters", flat=True
    )
    assert any("agent pending" in p for p in refused)  # the pending attempt was recorded


def test_mcp_sdk_private_key_jwt_client_credentials(clinic, stub, issuer):
    agent, key = helpers.make_agent(
        organization=clinic.org, owner=clinic.admin, kind="background", ceiling=[clinic.read, clinic.write]
    )
    helpers.grant(agent, clinic.read)
    pem = key.export_to_pem(private_key=True, password=None).decode()
    assert serialization.load_pem_private_key(pem.encode(), None)  # a plain PKCS#8 key, as the SDK wants
    client_id = agent.application.client_id
    provider = PrivateKeyJWTOAuthProvider(
        server_url=stub.resource,
        storage=MemoryStorage(),
        client_id=client_id,
        # The SDK signs with PyJWT and sends no kid: Gatehouse must try the agent's keys.
        assertion_provider=SignedJWTParameters(
            issuer=client_id,
            subject=client_id,
            signing_key=pem,
            signing_algorithm="ES256",
            lifetime_seconds=300,
        ).create_assertion_provider(),
        scope="records.read_own",
        issuer=issuer,
    )

    async def call():
        async with httpx2.AsyncClient(auth=provider, timeout=30) as client:
            response = await client.get(stub.resource)
            assert response.status_code == 200, response.text

    anyio.run(call)

    [claims] = stub.accepted
    assert claims["aud"] == stub.resource
    assert claims["sub"] == client_id == claims["client_id"]  # RFC 9068: no user, the client is the subject
    assert claims["scope"] == "records.read_own"
    event = AuditEvent.objects.get(agent_id=agent.pk, action="token.issued")
    assert json.loads(event.parameters)["jti"] == claims["jti"]
    assert event.capabilities == "records.read_own" and event.on_behalf_of_id is None
