#!/usr/bin/env python
"""Clinic records: a demo MCP server behind Gatehouse, built with the MCP Python SDK and gatehouse_toolkit.

It is the "Records" tool server of examples/clinic.yaml: it serves the resource
https://records.clinic.example/mcp (the tool server's audience), listens on 127.0.0.1, and knows nothing of
Gatehouse's database -- only its issuer URL and the tool server's own key.  Every request's token is
verified offline (signature against Gatehouse's JWKS, issuer, audience, expiry); every tool call is then
put to Gatehouse's decision API with the tool's arguments, so a token for alice cannot read bob's record.

    .venv/bin/python examples/clinic_mcp_server.py            # http://127.0.0.1:8001/mcp

The tool server's credentials (client_id and private key) are read from
var/demo_keys/records-tool-server.json, which examples/demo_mcp_client.py writes on its first run after
registering the public half on the Records tool server.  Until then, tool calls answer "not registered".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402
from mcp.server import MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402

from gatehouse_toolkit import JWKSCache, ToolServerGuard, ToolServerSettings  # noqa: E402
from gatehouse_toolkit.asgi import MetadataEndpoint, closing_on_shutdown  # noqa: E402
from gatehouse_toolkit.mcp import GatehouseTokenVerifier, ToolCheck, auth_settings  # noqa: E402

RESOURCE = "https://records.clinic.example/mcp"
CREDENTIALS = ROOT / "var" / "demo_keys" / "records-tool-server.json"
SCOPES = ("records.read_own", "appointments.book", "appointments.cancel", "prescriptions.request")

# --- the clinic's data (in memory, made up) --------------------------------------------------------------
PATIENTS: dict[str, dict[str, Any]] = {
    "p-001": {"name": "Alice", "born": "1984-03-12", "allergies": ["penicillin"], "notes": "Asthma, mild."},
    "p-002": {"name": "Bob", "born": "1979-11-02", "allergies": [], "notes": "Type 2 diabetes."},
    "p-003": {"name": "Carol", "born": "1991-07-23", "allergies": ["latex"], "notes": "Migraine."},
}
APPOINTMENTS: dict[str, dict[str, Any]] = {
    "a-100": {"patient_id": "p-001", "when": "2026-12-10T09:30", "with": "Dr. Okafor"},
    "a-101": {"patient_id": "p-002", "when": "2026-12-11T14:00", "with": "Dr. Menon"},
    "a-102": {"patient_id": "p-003", "when": "2026-12-12T08:15", "with": "Dr. Tanaka"},
}
PRESCRIPTION_REQUESTS: list[dict[str, Any]] = []


def clinic_settings(issuer: str, resource: str = RESOURCE) -> ToolServerSettings:
    # No DPoP algorithms: the MCP SDK's server middleware reads Bearer tokens only, so none are advertised.
    return ToolServerSettings(
        issuer=issuer,
        resource=resource,
        scopes_supported=SCOPES,
        resource_name="Clinic records",
        dpop_algs=(),
    )


class Credentials:
    """The tool server's decision-API credentials, read from ``path`` once it exists."""

    def __init__(self, settings: ToolServerSettings, keys: JWKSCache, path: Path):
        self.settings, self.keys, self.path = settings, keys, path
        self._check: ToolCheck | None = None

    async def aclose(self) -> None:
        if self._check is not None:
            await self._check.guard.aclose()

    def check(self) -> ToolCheck:
        if self._check is None:
            if not self.path.exists():
                raise ToolError(
                    "The records tool server is not registered yet: run examples/demo_mcp_client.py."
                )
            stored = json.loads(self.path.read_text())
            settings = dataclasses.replace(
                self.settings, client_id=stored["client_id"], private_jwk=stored["jwk"]
            )
            self._check = ToolCheck(ToolServerGuard(settings, keys=self.keys))
        return self._check


def build_app(settings: ToolServerSettings, *, credentials_path: Path = CREDENTIALS):
    """The ASGI app: the MCP server at /mcp, its protected-resource metadata from the toolkit's settings;
    its connections to Gatehouse are closed when the server shuts down."""
    keys = JWKSCache(settings)
    verifier_guard = ToolServerGuard(settings, keys=keys)
    credentials = Credentials(settings, keys, credentials_path)
    server = build_server(verifier_guard, credentials)
    app = server.streamable_http_app(stateless_http=True, json_response=True, host="127.0.0.1")
    return closing_on_shutdown(MetadataEndpoint(app, verifier_guard), verifier_guard, credentials)


def build_server(verifier_guard: ToolServerGuard, credentials: Credentials) -> MCPServer:
    mcp = MCPServer(
        "Clinic records",
        instructions="Patient records, appointments and prescription requests of Riverside Clinic.",
        token_verifier=GatehouseTokenVerifier(verifier_guard),
        auth=auth_settings(verifier_guard),
    )

    async def require(capability: str, tool: str, arguments: dict[str, Any]) -> None:
        await credentials.check().require(capability, arguments, tool=tool)

    @mcp.tool()
    async def read_patient_record(patient_id: str) -> dict:
        """Read a patient's record (the signed-in patient's own only)."""
        await require("records.read_own", "read_patient_record", {"patient_id": patient_id})
        record = PATIENTS.get(patient_id)
        if record is None:
            raise ToolError("No such record.")
        return {"patient_id": patient_id, **record}

    @mcp.tool()
    async def list_appointments(patient_id: str) -> list[dict]:
        """List a patient's appointments (part of the patient's own record)."""
        await require("records.read_own", "list_appointments", {"patient_id": patient_id})
        return [{"id": key, **a} for key, a in APPOINTMENTS.items() if a["patient_id"] == patient_id]

    @mcp.tool()
    async def book_appointment(patient_id: str, when: str, clinician: str = "first available") -> dict:
        """Book an appointment for a patient."""
        await require(
            "appointments.book",
            "book_appointment",
            {"patient_id": patient_id, "when": when, "clinician": clinician},
        )
        key = f"a-{100 + len(APPOINTMENTS)}"
        APPOINTMENTS[key] = {"patient_id": patient_id, "when": when, "with": clinician}
        return {"id": key, **APPOINTMENTS[key]}

    @mcp.tool()
    async def cancel_appointment(patient_id: str, appointment_id: str) -> dict:
        """Cancel one of a patient's appointments (needs approval and a recent second factor)."""
        await require(
            "appointments.cancel",
            "cancel_appointment",
            {"patient_id": patient_id, "appointment_id": appointment_id},
        )
        appointment = APPOINTMENTS.get(appointment_id)
        if appointment is None or appointment["patient_id"] != patient_id:
            raise ToolError("No such appointment.")
        del APPOINTMENTS[appointment_id]
        return {"cancelled": appointment_id}

    @mcp.tool()
    async def request_prescription(patient_id: str, medication: str, note: str = "") -> dict:
        """Ask a clinician to issue a prescription (needs two approvals)."""
        await require(
            "prescriptions.request",
            "request_prescription",
            {"patient_id": patient_id, "medication": medication, "note": note},
        )
        PRESCRIPTION_REQUESTS.append({"patient_id": patient_id, "medication": medication, "note": note})
        return {"requested": medication, "status": "waiting for a clinician"}

    return mcp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the demo clinic-records MCP server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("CLINIC_MCP_PORT", "8001")))
    parser.add_argument("--issuer", default=os.environ.get("GATEHOUSE_ISSUER", "http://127.0.0.1:8000"))
    parser.add_argument("--resource", default=RESOURCE)
    parser.add_argument("--credentials", default=str(CREDENTIALS))
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = clinic_settings(opts.issuer, opts.resource)
    app = build_app(settings, credentials_path=Path(opts.credentials))
    print(f"clinic records MCP server: http://127.0.0.1:{opts.port}/mcp  (resource {settings.resource})")
    uvicorn.run(app, host="127.0.0.1", port=opts.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
