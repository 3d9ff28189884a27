"""Typed reads from the parsed YAML tree, each problem recorded with its path (``agents[1].ceiling[2]``)."""

from __future__ import annotations

import re
from datetime import date, datetime
from urllib.parse import urlsplit

from governance.policy.errors import Problem, show

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
MISSING = object()


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Reader:
    """Collects problems instead of stopping at the first, so one run reports everything wrong."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, path: str, reason: str) -> None:
        self.problems.append(Problem(path, reason))

    # Containers ---------------------------------------------------------------------------------------------
    def mapping(
        self, value, path: str, *, allowed: set[str], required: set[str] = frozenset()
    ) -> dict | None:
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, not {_type(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, not {show(key)}")
            elif key not in allowed:
                self.fail(join(path, key), f"unknown key; allowed here: {', '.join(sorted(allowed))}")
        for key in sorted(required - set(value)):
            self.fail(join(path, key), "is required")
        return value

    def items(self, parent: dict, key: str, path: str, *, max_items: int) -> list[tuple[str, object]]:
        """(path, item) pairs of an optional list; a missing or null list is empty."""
        value = parent.get(key)
        where = join(path, key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(where, f"must be a list, not {_type(value)}")
            return []
        if len(value) > max_items:
            self.fail(where, f"holds {len(value)} entries; at most {max_items} are allowed")
            return []
        return [(join(where, index), item) for index, item in enumerate(value)]

    # Scalars ------------------------------------------------------------------------------------------------
    def text(
        self,
        parent: dict,
        key: str,
        path: str,
        *,
        max_length: int,
        default: str | None = "",
        pattern: re.Pattern | None = None,
        hint: str = "",
        multiline: bool = False,
        required: bool = False,
    ) -> str | None:
        value = parent.get(key, MISSING)
        where = join(path, key)
        if value is MISSING:  # a missing required key is reported by mapping()
            return None if required else default
        if value is None or (required and value == ""):
            if required:
                self.fail(where, "is required and must not be empty")
                return None
            return default
        if not isinstance(value, str):
            self.fail(where, f"must be a string, not {_type(value)}")
            return None
        if len(value) > max_length:
            self.fail(where, f"is {len(value)} characters long; at most {max_length} are allowed")
            return None
        if (_CONTROL_MULTILINE if multiline else _CONTROL).search(value):
            self.fail(where, "contains control characters")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(where, f"{show(value)} is not {hint or 'well formed'}")
            return None
        return value

    def flag(self, parent: dict, key: str, path: str, *, default: bool) -> bool | None:
        value = parent.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(join(path, key), f"must be true or false, not {_type(value)}")
            return None
        return value

    def number(
        self, parent: dict, key: str, path: str, *, minimum: int, maximum: int, default: int | None
    ) -> int | None:
        value = parent.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(join(path, key), f"must be a whole number, not {_type(value)}")
            return None
        if not minimum <= value <= maximum:
            self.fail(join(path, key), f"must be between {minimum} and {maximum}")
            return None
        return value

    def choice(
        self, parent: dict, key: str, path: str, *, choices: list[str], default: str | None
    ) -> str | None:
        value = parent.get(key, default)
        if value is None:
            return default
        if value not in choices or not isinstance(value, str):
            self.fail(join(path, key), f"{show(value)} is not one of: {', '.join(choices)}")
            return None
        return value

    def timestamp(self, parent: dict, key: str, path: str) -> datetime | None:
        value = parent.get(key)
        where = join(path, key)
        if value is None:
            return None
        if isinstance(value, str) and len(value) <= 64:
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                self.fail(where, f"{show(value)} is not an ISO 8601 timestamp")
                return None
        if not isinstance(value, datetime):
            hint = " (a date alone is ambiguous; add a time and zone)" if isinstance(value, date) else ""
            self.fail(where, f"must be a timestamp with a time zone, such as 2030-01-31T00:00:00Z{hint}")
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            self.fail(where, "must carry a time zone (for example a trailing Z for UTC)")
            return None
        return value

    def uri(self, value, path: str, *, what: str, allow_query: bool) -> str | None:
        """An absolute https URI (http only for loopback hosts), no fragment and no user information."""
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {_type(value)}")
            return None
        if len(value) > 500 or _CONTROL.search(value) or " " in value:
            self.fail(path, f"is not a usable {what}: too long or contains spaces or control characters")
            return None
        try:
            parts = urlsplit(value)
            host = parts.hostname or ""
        except ValueError:
            self.fail(path, f"{show(value)} is not a valid {what}")
            return None
        problem = None
        if parts.scheme not in ("https", "http") or not parts.netloc or not host:
            problem = "must be an absolute https URI"
        elif parts.scheme == "http" and host not in LOOPBACK_HOSTS:
            problem = "must use https (plain http only for 127.0.0.1, [::1] or localhost)"
        elif "#" in value:
            problem = "must not have a fragment"
        elif parts.username is not None or parts.password is not None:
            problem = "must not carry user information"
        elif parts.query and not allow_query:
            problem = "must not have a query"
        if problem:
            self.fail(path, f"{show(value)} {problem}")
            return None
        return value


def _type(value) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
