"""The import contracts of docs/architecture.md hold: layers point one way, no cycle, audit stands alone.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and are checked here with import-linter,
so a cycle or a forbidden import fails the suite.  Imports inside functions count like any other.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"

# Beyond what import-linter can name (it forbids only whole external packages): the broker's rules and
# storage never reach for HTTP or for DOT's views, validator and oauthlib glue.
HTTP_AND_DOT_GLUE = (
    "django.http",
    "django.views",
    "django.shortcuts",
    "oauth2_provider.views",
    "oauth2_provider.oauth2_validators",
    "oauth2_provider.oauth2_backends",
)


def contracts() -> list[dict]:
    return tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]["contracts"]


def test_every_import_contract_is_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(CONFIG), no_cache=True, no_logo=True) == 0


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


RULES = next(c for c in contracts() if c["id"] == "broker-rules-know-no-oauthlib")["source_modules"]


@pytest.mark.parametrize("module", RULES)
def test_broker_rules_know_nothing_of_http(module):
    path = ROOT / (module.replace(".", "/") + ".py")
    forbidden = {
        name
        for name in _imported_names(path)
        if any(name == glue or name.startswith(glue + ".") for glue in HTTP_AND_DOT_GLUE)
    }
    assert not forbidden, f"{module} imports {sorted(forbidden)}"
