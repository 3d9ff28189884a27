"""The toolkit's core runs in a tool server's process: it must not pull in Django or the portal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = (
    "django",
    "rest_framework",
    "governance",
    "audit",
    "approvals",
    "config",
    "oauth2_provider",
    "mcp",
)

PROBE = """
import json, sys
import gatehouse_toolkit, gatehouse_toolkit.asgi
from gatehouse_toolkit import ToolServerGuard, ToolServerSettings
guard = ToolServerGuard(ToolServerSettings(issuer="https://gh.example", resource="https://tools.example/mcp"))
guard.metadata()
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_core_and_asgi_adapter_import_nothing_of_django_or_the_portal():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # no DJANGO_SETTINGS_MODULE either
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = set(json.loads(out.stdout))
    assert "gatehouse_toolkit" in loaded and "jwcrypto" in loaded
    assert not loaded.intersection(FORBIDDEN), loaded.intersection(FORBIDDEN)


def test_no_module_of_the_core_names_the_portal_or_django():
    core = [p for p in (ROOT / "gatehouse_toolkit").glob("*.py") if p.name not in {"drf.py", "mcp.py"}]
    assert len(core) >= 8
    for path in core:
        text = path.read_text()
        for name in FORBIDDEN:
            assert f"import {name}" not in text and f"from {name}" not in text, (path.name, name)
