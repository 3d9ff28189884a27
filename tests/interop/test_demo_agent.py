"""examples/demo_agent.py runs against a live server with the clinic policy applied."""

from __future__ import annotations

import importlib.util
import io
import json
import stat
from pathlib import Path

import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from governance.models import Agent

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


def load_demo():
    spec = importlib.util.spec_from_file_location("demo_agent", ROOT / "examples" / "demo_agent.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_gets_tokens_shows_a_refused_elevation_and_the_audit_events(issuer, tmp_path):
    call_command("policy", "apply", str(ROOT / "examples" / "clinic.yaml"), stdout=io.StringIO())
    demo = load_demo()
    out = io.StringIO()
    assert demo.main(["--base-url", issuer, "--key-dir", str(tmp_path)], out=out) == 0
    text = out.getvalue()

    # Keys: private halves only under the key directory, owner-only; the agents hold the public halves.
    for name in ("billing-runner", "voice-assistant"):
        path = tmp_path / f"{name}.jwk.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and '"d"' in path.read_text()
        registered = Agent.objects.get(name=name).jwks["keys"]
        assert [k["kid"] for k in registered] == [f"demo-{name}"] and all("d" not in k for k in registered)

    assert "aud       https://billing.clinic.example/api" in text
    assert "aud       https://records.clinic.example/mcp" in text
    assert "← user alice" in text
    assert "HTTP 400" in text and "invalid_scope" in text
    for action in ("agent.keys_changed", "token.issued", "consent.given", "elevation.attempted"):
        assert action in text
    issued = [json.loads(e.parameters)["jti"] for e in AuditEvent.objects.filter(action="token.issued")]
    assert len(issued) == 2 and all(jti in text for jti in issued)

    # A second run reuses the keys and registers nothing again.
    again = io.StringIO()
    demo.main(["--base-url", issuer, "--key-dir", str(tmp_path)], out=again)
    assert "registered the demo public key" not in again.getvalue()
