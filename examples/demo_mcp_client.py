#!/usr/bin/env python
"""Call the clinic-records MCP server as an agent: an allowed call, a call outside the grant, and another
patient's record.

With `make run` serving Gatehouse on 127.0.0.1:8000 and examples/clinic_mcp_server.py serving on
127.0.0.1:8001, in a third terminal:

    DEBUG=1 .venv/bin/python examples/demo_mcp_client.py

On its first run it registers the Records tool server's demo key (var/demo_keys/records-tool-server.json,
never committed) through the tool_server_set_credentials service, as the system; the MCP server picks it up
at its next tool call.  Then voice-assistant gets a token for the patient alice (code + PKCE, consent, as in
examples/demo_agent.py) and, through the MCP Python SDK's client:

1. reads alice's own record (p-001): allowed;
2. cancels an appointment: refused, appointments.cancel is outside the grant (insufficient_scope);
3. reads bob's record (p-002) with alice's token: refused by the user check (constraint_violated) --
   the confused deputy stopped;

then prints the decision events the calls caused in the audit log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
sys.path.insert(0, str(EXAMPLES))

import demo_agent  # noqa: E402

TOOL_SERVER = "Records"
CALLS = [
    ("alice reads her own record", "read_patient_record", {"patient_id": "p-001"}),
    (
        "alice's agent tries to cancel an appointment",
        "cancel_appointment",
        {"patient_id": "p-001", "appointment_id": "a-100"},
    ),
    ("alice's token asks for bob's record", "read_patient_record", {"patient_id": "p-002"}),
]


def ensure_tool_server_key(path: Path, out) -> None:
    """The Records tool server's demo key and client_id (file mode 0600), registered once."""
    from jwcrypto import jwk

    from audit.services import SYSTEM
    from governance.models import ToolServer
    from governance.services import tool_server_set_credentials

    server = ToolServer.objects.get(name=TOOL_SERVER, organization__slug="clinic")
    if path.exists():
        stored = json.loads(path.read_text())
        key = jwk.JWK(**stored["jwk"])
    else:
        key = jwk.JWK.generate(kty="EC", crv="P-256", kid="demo-records-tool-server", use="sig", alg="ES256")
    public = json.loads(key.export_public())
    if [k.get("kid") for k in server.jwks.get("keys", [])] != [public["kid"]] or server.application is None:
        tool_server_set_credentials(
            actor=SYSTEM,
            tool_server=server,
            token_endpoint_auth_method="private_key_jwt",
            jwks={"keys": [public]},
        )
        print(f"registered the demo public key {public['kid']} on the {TOOL_SERVER} tool server", file=out)
    stored = {"client_id": server.application.client_id, "jwk": json.loads(key.export_private())}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(stored))


async def call_tools(url: str, token: str, out) -> list[tuple[str, bool, str]]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    results = []
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        tools = await client.list_tools()
        print(f"   tools: {' '.join(sorted(t.name for t in tools.tools))}", file=out)
        for label, name, arguments in CALLS:
            result = await client.call_tool(name, arguments)
            text = " ".join(getattr(c, "text", "") for c in result.content)
            text = text.removeprefix(f"Error executing tool {name}: ")
            shown = ", ".join(f"{k}={v}" for k, v in arguments.items())
            verdict = "REFUSED" if result.is_error else "allowed"
            print(f"\n-- {label}: {name}({shown})\n   {verdict}: {text[:300]}", file=out)
            results.append((name, not result.is_error, text))
    return results


def main(argv: list[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(description="Call the demo clinic-records MCP server as an agent.")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--mcp-url", default="http://127.0.0.1:8001/mcp")
    parser.add_argument("--key-dir", default=str(ROOT / "var" / "demo_keys"))
    opts = parser.parse_args(argv)
    demo_agent.setup_django()
    for name in ("httpx", "httpx2"):  # the demo prints what matters itself
        logging.getLogger(name).setLevel(logging.WARNING)

    import anyio
    import httpx

    from audit.models import AuditEvent
    from governance.models import Agent, User

    key_dir = Path(opts.key_dir)
    start = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    ensure_tool_server_key(key_dir / "records-tool-server.json", out)
    voice = Agent.objects.select_related("application").get(
        name="voice-assistant", organization__slug="clinic"
    )
    key = demo_agent.demo_key(key_dir, voice.name)
    if demo_agent.register_key(voice, key):
        print(f"registered the demo public key {key.get('kid')} on {voice.name}", file=out)
    alice = User.objects.get(username="alice")

    with httpx.Client(timeout=20) as http:
        meta = http.get(f"{opts.base_url}/.well-known/oauth-authorization-server").json()
        body = demo_agent.authorization_code_for(
            http, meta, voice, key, alice, base_url=opts.base_url, out=out
        )
    print(f"   token for alice: scope={body.get('scope')!r}, expires in {body['expires_in']} s", file=out)

    print(
        f"\n== voice-assistant, acting for alice, calls the clinic records MCP server at {opts.mcp_url}",
        file=out,
    )
    anyio.run(call_tools, opts.mcp_url, body["access_token"], out)
    demo_agent.show_events(
        out, AuditEvent.objects.filter(seq__gt=start, action__startswith="decision.").order_by("seq")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
