"""Reading a policy file: bounded size, YAML's safe loader, no aliases, no repeated mapping keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from governance.policy.errors import PolicyRefused, Problem

MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class PolicyText:
    name: str
    data: object
    sha256: str


def read_file(path: str | Path) -> PolicyText:
    """Read and parse a policy file from disk (OSError is left to the caller)."""
    path = Path(path)
    with path.open("rb") as handle:
        raw = handle.read(MAX_FILE_BYTES + 1)
    return parse(raw, name=path.name)


def parse(raw: bytes, *, name: str) -> PolicyText:
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) > MAX_FILE_BYTES:
        raise PolicyRefused(
            name, [Problem("", f"the file is larger than {MAX_FILE_BYTES} bytes")], sha256=digest
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyRefused(name, [Problem("", "the file is not UTF-8 text")], sha256=digest) from None
    try:
        _check_events(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyRefused(
            name, [Problem("", f"not valid YAML: {_yaml_reason(exc)}")], sha256=digest
        ) from None
    except _Refusal as exc:
        raise PolicyRefused(name, [Problem("", str(exc))], sha256=digest) from None
    return PolicyText(name=name, data=data, sha256=digest)


class _Refusal(Exception):
    pass


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "syntax error"
    return f"{problem} (line {mark.line + 1})" if mark is not None else str(problem)


def _check_events(text: str) -> None:
    """Refuse aliases (a few lines can expand into millions of nodes) and repeated keys (the last would win
    silently, so `revoked: false` after `revoked: true` would change meaning unseen)."""
    stack: list[dict] = []  # one frame per open collection: {"map": bool, "keys": set, "expect_key": bool}
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refusal(f"line {line}: YAML anchors and aliases are not allowed in policy files")
        if isinstance(event, yaml.ScalarEvent):
            _value_seen(stack, line, key=event.value)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            _value_seen(stack, line, key=None)
            stack.append(
                {"map": isinstance(event, yaml.MappingStartEvent), "keys": set(), "expect_key": True}
            )
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            stack.pop()


def _value_seen(stack: list[dict], line: int, *, key: str | None) -> None:
    if not stack or not stack[-1]["map"]:
        return
    frame = stack[-1]
    if frame["expect_key"]:
        if key is None:
            raise _Refusal(f"line {line}: mapping keys must be plain strings")
        if key in frame["keys"]:
            raise _Refusal(f"line {line}: the key {key!r} appears twice in one mapping")
        frame["keys"].add(key)
    frame["expect_key"] = not frame["expect_key"]
