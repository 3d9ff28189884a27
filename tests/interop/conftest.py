"""Interop fixtures: Gatehouse on pytest-django's live server, and a small tool server of our own.

The tool server is what an MCP server in front of records would be, over real HTTP on 127.0.0.1: it
publishes RFC 9728 protected-resource metadata naming Gatehouse, answers 401 with ``resource_metadata``
without a valid token, and checks a token's signature against Gatehouse's JWKS, its issuer, audience and
expiry.  Clients nobody here wrote are pointed at it and must find their way to Gatehouse on their own.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.utils import timezone
from jwcrypto import jwk, jwt
from jwcrypto.common import JWException

from governance.models import Grant
from tests.factories import (
    AdminFactory,
    CapabilityFactory,
    OrganizationFactory,
    ToolServerFactory,
    UserFactory,
)

PASSWORD = "correct horse battery staple"


class ToolServerStub:
    def __init__(self, issuer: str, *, scope: str):
        self.issuer = issuer
        self.scope = scope
        self.accepted: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                if self.path.startswith("/.well-known/oauth-protected-resource"):
                    return self._send(200, stub.metadata())
                if self.path.startswith("/mcp"):
                    claims = stub.verify(self.headers.get("Authorization", ""))
                    if claims is None:
                        challenge = f'Bearer resource_metadata="{stub.metadata_url}", scope="{stub.scope}"'
                        return self._send(401, {"error": "invalid_token"}, {"WWW-Authenticate": challenge})
                    stub.accepted.append(claims)
                    return self._send(200, {"hello": claims["sub"]})
                return self._send(404, {"error": "not_found"})

            do_POST = do_GET  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.resource = f"{self.base}/mcp"
        self.metadata_url = f"{self.base}/.well-known/oauth-protected-resource/mcp"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def metadata(self) -> dict:
        return {
            "resource": self.resource,
            "authorization_servers": [self.issuer],
            "scopes_supported": self.scope.split(),
            "bearer_methods_supported": ["header"],
        }

    def verify(self, header: str) -> dict | None:
        if not header.startswith("Bearer "):
            return None
        keys = jwk.JWKSet.from_json(httpx.get(f"{self.issuer}/oauth/jwks.json", timeout=10).text)
        try:
            token = jwt.JWT(
                jwt=header[7:],
                key=keys,
                algs=["ES256", "EdDSA"],
                check_claims={"iss": self.issuer, "aud": self.resource, "exp": None},
            )
        except (JWException, ValueError):
            return None
        return json.loads(token.claims)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def issuer(live_server, settings):
    settings.GATEHOUSE_ISSUER = live_server.url
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": live_server.url}
    yield live_server.url
    # The SQLite integrity triggers refuse to empty a ceiling that open grants use, which is what the
    # transactional test's flush does; close the grants first.
    Grant.objects.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


@pytest.fixture
def stub(issuer):
    with ToolServerStub(issuer, scope="records.read_own") as server:
        yield server


class Clinic:
    def __init__(self, stub: ToolServerStub):
        self.org = OrganizationFactory(slug="clinic", name="Clinic")
        self.admin = AdminFactory(organization=self.org, username="dana")
        self.member = UserFactory(organization=self.org, username="alice")
        self.records = ToolServerFactory(organization=self.org, name="Records", audience=stub.resource)
        self.read = CapabilityFactory(
            tool_server=self.records, key="records.read_own", description="Own record"
        )
        self.write = CapabilityFactory(tool_server=self.records, key="records.write_own")


@pytest.fixture
def clinic(transactional_db, stub) -> Clinic:
    return Clinic(stub)
