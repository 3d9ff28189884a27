"""The adapters: a plain ASGI app and a DRF view behind the toolkit, and the MCP SDK's TokenVerifier.

Tokens are signed with Gatehouse's real key; the decision point is the stand-in (its answers are set by
the test), so these tests are about what each adapter does with each answer.
"""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qsl

import anyio
import httpx
import pytest
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from gatehouse_toolkit import DecisionClient, ToolServerGuard
from gatehouse_toolkit.asgi import GatehouseMiddleware, caller
from gatehouse_toolkit.drf import GatehouseAuthentication, GatehouseDecision
from gatehouse_toolkit.mcp import GatehouseTokenVerifier
from tests.oauth import dpop_client
from tests.toolkit.pdp import StandInPDP

BASE = "https://records.example.test"


@pytest.fixture
def pdp():
    with StandInPDP() as server:
        yield server


@pytest.fixture
def guard(offline_guard, pdp):
    settings = dataclasses.replace(
        offline_guard.settings, decision_endpoint=pdp.url, client_id="records-ts", client_secret="s3cret"
    )
    return ToolServerGuard(settings, keys=offline_guard.tokens.keys, decisions=DecisionClient(settings))


# --- ASGI -----------------------------------------------------------------------------------------------


def asgi_app(guard):
    async def app(scope, receive, send):
        if scope["path"] == "/healthz":
            assert "gatehouse.caller" not in scope
            await send({"type": "http.response.start", "status": 204, "headers": []})
            return await send({"type": "http.response.body", "body": b""})
        found = caller(scope)
        parameters = dict(parse_qsl(scope["query_string"].decode()))
        await guard.aauthorize(
            found, capability="records.read_own", tool="read_patient_record", parameters=parameters
        )
        body = json.dumps({"subject": found.token.subject}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return GatehouseMiddleware(app, guard, public_paths={"/healthz"})


def call(app, method, path, headers=None):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            return await http.request(method, path, headers=headers or {})

    return anyio.run(go)


def test_asgi_serves_the_metadata_and_challenges_a_request_without_a_token(guard, pdp):
    app = asgi_app(guard)
    metadata = call(app, "GET", "/.well-known/oauth-protected-resource/mcp")
    assert metadata.status_code == 200 and metadata.json()["resource"] == "https://records.example.test/mcp"
    bare = call(app, "GET", "/mcp/read")
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"] == f'Bearer resource_metadata="{guard.settings.metadata_url}"'
    assert call(app, "GET", "/healthz").status_code == 204  # a public path reaches the app without a token
    assert pdp.requests == []


def test_asgi_allows_a_call_the_decision_point_allows(guard, pdp, signed):
    token = signed()
    answer = call(asgi_app(guard), "GET", "/mcp/read?patient_id=p-001", {"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json() == {"subject": "user-7"}
    [seen] = pdp.requests
    assert seen["body"]["subject"]["properties"] == {"token": token}
    assert seen["body"]["resource"]["properties"]["parameters"] == {"patient_id": "p-001"}
    assert seen["body"]["context"]["http"] == {"method": "GET", "url": f"{BASE}/mcp/read"}


@pytest.mark.parametrize(
    ("context", "status", "header_start"),
    [
        (
            {"reason": "insufficient_scope", "check": "scope", "scope": "records.read_own"},
            403,
            'Bearer error="insufficient_scope"',
        ),
        ({"reason": "constraint_violated", "check": "user"}, 403, None),
        ({"reason": "token_revoked", "check": "token"}, 401, 'Bearer error="invalid_token"'),
        ({"reason": "rate_limited", "check": "rate", "retry_after": 9}, 429, None),
    ],
)
def test_asgi_answers_a_denial_with_its_challenge(guard, pdp, signed, context, status, header_start):
    pdp.deny(message="Refused.", **context)
    answer = call(
        asgi_app(guard), "GET", "/mcp/read?patient_id=p-002", {"Authorization": f"Bearer {signed()}"}
    )
    assert answer.status_code == status
    if header_start:
        assert answer.headers["www-authenticate"].startswith(header_start)
    if status == 429:
        assert answer.headers["retry-after"] == "9"
    assert answer.json()["error_description"] == "Refused."


def test_asgi_fails_closed_when_the_decision_point_is_down(guard, pdp, signed):
    pdp.status = 502
    answer = call(asgi_app(guard), "GET", "/mcp/read", {"Authorization": f"Bearer {signed()}"})
    assert answer.status_code == 503 and answer.json()["reason"] == "unavailable"


def test_asgi_checks_dpop_against_the_public_url_and_forwards_the_proof(guard, pdp, signed):
    key = dpop_client.new_key()
    token = signed(cnf_jkt=key.thumbprint())
    proof = dpop_client.make_proof("POST", f"{BASE}/mcp/read", key, access_token=token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof, "Host": "evil.example.test"}
    answer = call(asgi_app(guard), "POST", "/mcp/read", headers)
    assert answer.status_code == 200
    assert pdp.requests[0]["body"]["subject"]["properties"]["dpop"] == proof
    # A proof made for the Host the request claims (not the tool server's public URL) is refused.
    proof = dpop_client.make_proof("POST", "https://evil.example.test/mcp/read", key, access_token=token)
    answer = call(asgi_app(guard), "POST", "/mcp/read", {**headers, "DPoP": proof})
    assert answer.status_code == 401 and 'error="invalid_dpop_proof"' in answer.headers["www-authenticate"]


def test_asgi_refuses_two_authorization_headers_and_bad_tokens(guard, pdp, signed):
    app = asgi_app(guard)
    two = [("Authorization", f"Bearer {signed()}"), ("Authorization", f"Bearer {signed()}")]

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            return await http.get("/mcp/read", headers=httpx.Headers(two))

    assert anyio.run(go).status_code == 401
    for header in ("Bearer", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "Bearer " + "A" * 9000, "Bearer x\x7fy"):
        answer = call(app, "GET", "/mcp/read", {"Authorization": header})
        assert answer.status_code == 401, header
    assert pdp.requests == []


# --- DRF ------------------------------------------------------------------------------------------------


class RecordView(APIView):
    authentication_classes = [GatehouseAuthentication]
    permission_classes = [GatehouseDecision]
    gatehouse_capability = {"GET": "records.read_own"}
    gatehouse_tool = "read_patient_record"

    def get(self, request):
        return Response({"subject": request.user.subject, "client_id": request.auth.token.client_id})


def drf_call(guard, method="get", headers=None, query=""):
    view = type("View", (RecordView,), {"gatehouse_guard": guard}).as_view()
    factory = APIRequestFactory()
    request = getattr(factory, method)(f"/records{query}", **(headers or {}))
    return view(request)


def test_drf_view_allows_and_passes_the_parameters(guard, pdp, signed):
    token = signed()
    response = drf_call(guard, headers={"HTTP_AUTHORIZATION": f"Bearer {token}"}, query="?patient_id=p-001")
    assert response.status_code == 200 and response.data == {"subject": "user-7", "client_id": "agent-1"}
    body = pdp.requests[0]["body"]
    assert body["action"] == {"name": "records.read_own"} and body["resource"]["id"] == "read_patient_record"
    assert body["resource"]["properties"]["parameters"] == {"patient_id": "p-001"}


def test_drf_view_challenges_missing_and_bad_tokens(guard, pdp, signed):
    missing = drf_call(guard)
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"] == f'Bearer resource_metadata="{guard.settings.metadata_url}"'
    other = signed(audience="https://calendar.example.test/mcp")
    wrong = drf_call(guard, headers={"HTTP_AUTHORIZATION": f"Bearer {other}"})
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert pdp.requests == []


def test_drf_view_maps_denials(guard, pdp, signed):
    pdp.deny(reason="insufficient_scope", check="scope", message="Not granted.", scope="records.read_own")
    refused = drf_call(guard, headers={"HTTP_AUTHORIZATION": f"Bearer {signed()}"})
    assert refused.status_code == 403
    assert refused["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')
    pdp.deny(reason="quota_exceeded", check="rate", message="Daily quota.", retry_after=60)
    limited = drf_call(guard, headers={"HTTP_AUTHORIZATION": f"Bearer {signed()}"})
    assert limited.status_code == 429 and limited["Retry-After"] == "60"
    pdp.status = 500
    down = drf_call(guard, headers={"HTTP_AUTHORIZATION": f"Bearer {signed()}"})
    assert down.status_code == 503


def test_drf_method_without_a_capability_is_not_allowed(guard, pdp, signed):
    assert drf_call(guard, "post", headers={"HTTP_AUTHORIZATION": f"Bearer {signed()}"}).status_code == 405


# --- MCP SDK TokenVerifier --------------------------------------------------------------------------------


def test_mcp_token_verifier(guard, signed):
    verifier = GatehouseTokenVerifier(guard)
    token = signed(scope=["records.read_own", "appointments.book"])
    access = anyio.run(verifier.verify_token, token)
    assert access.client_id == "agent-1" and access.subject == "user-7"
    assert access.scopes == ["records.read_own", "appointments.book"]
    assert access.resource == guard.settings.resource and access.claims["jti"]
    assert anyio.run(verifier.verify_token, signed(audience="https://other.example.test/")) is None
    assert anyio.run(verifier.verify_token, "garbage") is None
    # A DPoP-bound token arrives at the SDK's Bearer middleware without its proof: refused.
    assert anyio.run(verifier.verify_token, signed(cnf_jkt=dpop_client.new_key().thumbprint())) is None


def test_metadata_endpoint_serves_the_toolkits_document_in_front_of_another_app(guard):
    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    from gatehouse_toolkit.asgi import MetadataEndpoint

    app = MetadataEndpoint(inner, guard)
    document = call(app, "GET", "/.well-known/oauth-protected-resource/mcp")
    assert document.status_code == 200 and document.json() == guard.metadata()
    assert call(app, "POST", "/.well-known/oauth-protected-resource/mcp").status_code == 405
    assert call(app, "GET", "/mcp").status_code == 418


def test_lifespan_shutdown_closes_the_guards_connections(guard, pdp, signed):
    from gatehouse_toolkit.asgi import closing_on_shutdown

    async def inner(scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    token = signed()

    async def run():
        caller = guard.authenticate(
            authorization=f"Bearer {token}", dpop=[], method="POST", url=f"{BASE}/mcp"
        )
        assert (await guard.aauthorize(caller, capability="records.read_own")).allowed
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent = []

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message["type"])

        await closing_on_shutdown(inner, guard)({"type": "lifespan"}, receive, send)
        return sent

    assert anyio.run(run) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert guard.decisions._async_http.is_closed and guard.decisions._http.is_closed
    assert guard.tokens.keys._http.is_closed
