"""The toolkit against Gatehouse's real decision API, over real HTTP with real tokens, and the MCP SDK's
client calling the demo clinic-records MCP server (examples/clinic_mcp_server.py) with a Gatehouse token."""

from __future__ import annotations

import importlib.util
import io
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from django.core.management import call_command
from django.utils import timezone
from jwcrypto import jwk

from audit.models import AuditEvent
from audit.services import SYSTEM
from gatehouse_toolkit import Refused, ToolServerGuard
from governance.models import Grant
from governance.services import (
    agent_suspend,
    grant_revoke,
    tool_server_issue_secret,
    tool_server_set_credentials,
)
from tests.oauth import dpop_client

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def opened():
    """Guards made by a test, closed after it (their keep-alive connections hold live-server threads, and
    those threads hold database connections)."""
    guards: list[ToolServerGuard] = []
    yield guards
    for guard in guards:
        guard.close()


def registered_guard(live, opened, **kwargs) -> ToolServerGuard:
    """A guard for the Records tool server holding its own registered key."""
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="records-e2e")
    records = live.world.records
    tool_server_set_credentials(
        actor=SYSTEM,
        tool_server=records,
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [json.loads(key.export_public())]},
    )
    settings = live.settings(
        client_id=records.application.client_id, private_jwk=json.loads(key.export_private()), **kwargs
    )
    guard = ToolServerGuard(settings)
    opened.append(guard)
    return guard


def decide(guard, token, *, capability="records.read_own", parameters=None, scheme="Bearer", dpop_key=None):
    url = guard.settings.url_for("/mcp")
    proofs = [dpop_client.make_proof("POST", url, dpop_key, access_token=token)] if dpop_key else []
    caller = guard.authenticate(authorization=f"{scheme} {token}", dpop=proofs, method="POST", url=url)
    return guard.authorize(caller, capability=capability, tool="read_patient_record", parameters=parameters)


def refusal(*args, **kwargs) -> Refused:
    with pytest.raises(Refused) as caught:
        decide(*args, **kwargs)
    return caught.value


def test_allowed_then_refused_outside_the_grant(live, opened):
    guard = registered_guard(live, opened)
    token = live.token()
    assert decide(guard, token).allowed
    refused = refusal(guard, token, capability="records.write_own")
    assert refused.decision.reason == "insufficient_scope" and refused.challenge.status == 403
    assert 'scope="records.write_own"' in refused.challenge.headers["WWW-Authenticate"]
    events = list(AuditEvent.objects.filter(action__startswith="decision.").order_by("seq"))
    assert [e.action for e in events] == ["decision.allowed", "decision.denied"]


def test_a_tool_server_with_a_client_secret_authenticates_with_basic(live, opened):
    records = live.world.records
    tool_server_set_credentials(
        actor=SYSTEM, tool_server=records, token_endpoint_auth_method="client_secret_basic"
    )
    secret = tool_server_issue_secret(actor=SYSTEM, tool_server=records)
    guard = ToolServerGuard(live.settings(client_id=records.application.client_id, client_secret=secret))
    assert decide(guard, live.token()).allowed
    wrong = ToolServerGuard(
        live.settings(client_id=records.application.client_id, client_secret=secret + "x")
    )
    assert refusal(wrong, live.token()).decision.reason == "unavailable"


def test_a_dpop_bound_token_with_its_proof_is_decided_by_both_halves(live, opened):
    guard = registered_guard(live, opened)
    key = dpop_client.new_key()
    token = live.token(dpop_key=key)
    assert decide(guard, token, scheme="DPoP", dpop_key=key).allowed


def test_the_kill_switch_holds_at_the_next_call_though_the_token_still_verifies_offline(live, opened):
    """Offline checks cannot see a revoked grant or a suspended agent; the decision API does, at once."""
    guard = registered_guard(live, opened)
    token = live.token()
    assert decide(guard, token).allowed
    grant = Grant.objects.get(agent=live.agent, capability=live.world.read, revoked_at__isnull=True)
    grant_revoke(actor=live.world.admin, grant=grant, reason="patient withdrew consent")
    assert guard.tokens.verify(token)  # still a well-signed, unexpired token
    refused = refusal(guard, token)
    assert refused.decision.check in {"token", "user"} and refused.challenge.status in {401, 403}

    # The same for a suspended agent, with a fresh grant and token.
    Grant.objects.create(organization=live.world.org, agent=live.agent, capability=live.world.read)
    token = live.token()
    assert decide(guard, token).allowed
    agent_suspend(actor=live.world.admin, agent=live.agent, reason="compromised")
    assert guard.tokens.verify(token)
    refused = refusal(guard, token)
    assert refused.decision.check == "token" and refused.challenge.status == 401


def test_a_tool_server_with_the_wrong_key_gets_no_decision_and_the_call_is_refused(live, opened):
    guard = registered_guard(live, opened)
    impostor = ToolServerGuard(
        live.settings(
            client_id=guard.settings.client_id,
            private_jwk=json.loads(
                jwk.JWK.generate(kty="EC", crv="P-256", kid="records-e2e").export_private()
            ),
        )
    )
    refused = refusal(impostor, live.token())
    assert refused.decision.reason == "unavailable" and refused.challenge.status == 503


# --- the MCP SDK's client and the demo MCP server ---------------------------------------------------------


class ThreadedServer(uvicorn.Server):
    def install_signal_handlers(self):  # older uvicorn; newer ones skip this off the main thread
        pass


@pytest.fixture
def clinic_mcp(issuer, tmp_path):
    call_command("policy", "apply", str(ROOT / "examples" / "clinic.yaml"), stdout=io.StringIO())
    clinic = load("clinic_mcp_server")
    app = clinic.build_app(
        clinic.clinic_settings(issuer), credentials_path=tmp_path / "records-tool-server.json"
    )
    server = ThreadedServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/mcp", tmp_path
    server.should_exit = True
    thread.join(10)
    Grant.objects.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


def test_the_mcp_sdk_client_calls_the_demo_server_with_a_gatehouse_token(issuer, clinic_mcp):
    url, key_dir = clinic_mcp
    metadata = httpx.get(url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")).json()
    assert metadata["resource"] == "https://records.clinic.example/mcp"
    assert (
        metadata["authorization_servers"] == [issuer] and "records.read_own" in metadata["scopes_supported"]
    )
    demo = load("demo_mcp_client")
    out = io.StringIO()
    assert demo.main(["--base-url", issuer, "--mcp-url", url, "--key-dir", str(key_dir)], out=out) == 0
    text = out.getvalue()
    assert "tools: book_appointment cancel_appointment list_appointments read_patient_record" in text
    sections = text.split("\n-- ")[1:]
    assert len(sections) == 3, text
    own, outside, other = sections
    assert "allowed:" in own and '"name":"Alice"' in own.replace(" ", "")
    assert "REFUSED: insufficient_scope: " in outside
    assert "REFUSED: constraint_violated: " in other and "Bob" not in other and "p-002\n" not in other

    events = list(AuditEvent.objects.filter(action__startswith="decision.").order_by("seq"))
    assert [e.action for e in events] == ["decision.allowed", "decision.denied", "decision.denied"]
    reasons = [json.loads(e.parameters).get("reason") for e in events[1:]]
    assert reasons == ["insufficient_scope", "constraint_violated"]
    assert all(e.on_behalf_of_label == "alice" for e in events)
