"""The value types of a policy file: strict pydantic types, each with the check that needs more than a type.

A check raises :func:`refuse` with a sentence that never echoes secrets (a short, printable echo of an
untrusted value at most) and, where the problem sits below the value (``keys[0]`` of a JWKS, one attribute
of a user), the sub-path in ``where``; :func:`governance.policy.schema.problems_of` renders both.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

from governance.enforcement.constraints import constraint_problems
from governance.errors import InvalidInput
from governance.keys import validate_public_jwks
from governance.models.organizations import attribute_problems
from governance.policy.errors import show
from governance.text import CLIENT_ID, CLIENT_ID_HINT, text_problem

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
NAME_LENGTH, TEXT_LENGTH, REASON_LENGTH, URI_LENGTH = 200, 2000, 1000, 500
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.@+_-]{0,149}")
CAPABILITY_KEY = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


def refuse(reason: str, *, where: str = "") -> PydanticCustomError:
    return PydanticCustomError("policy", "{reason}", {"reason": reason, "where": where})


def type_name(value) -> str:
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


def _text(max_length: int, *, multiline: bool = False, pattern: re.Pattern | None = None, hint: str = ""):
    def check(value: str) -> str:
        problem = text_problem(value, max_length=max_length, multiline=multiline)
        if problem:
            raise refuse(problem)
        if pattern is not None and not pattern.fullmatch(value):
            raise refuse(f"{show(value)} is not {hint}")
        return value

    return Annotated[str, AfterValidator(check)]


def _required(value: str) -> str:
    if value == "":
        raise refuse("is required and must not be empty")
    return value


Name = Annotated[_text(NAME_LENGTH), AfterValidator(_required)]
Description = _text(TEXT_LENGTH, multiline=True)
Reason = _text(REASON_LENGTH, multiline=True)
Slug = _text(64, pattern=SLUG, hint="a lowercase slug")
Username = _text(150, pattern=USERNAME, hint="a user name (letters, digits and . @ + _ -)")
PersonName = _text(150)
CapabilityKey = _text(
    128, pattern=CAPABILITY_KEY, hint="a capability key: dotted lowercase words such as records.read_own"
)
ClientId = _text(100, pattern=CLIENT_ID, hint=CLIENT_ID_HINT)


def _email(value: str) -> str:
    if value:
        try:
            validate_email(value)
        except ValidationError:
            raise refuse(f"{show(value)} is not an e-mail address") from None
    return value


Email = Annotated[_text(254), AfterValidator(_email)]


def _number(minimum: int, maximum: int):
    def check(value: int) -> int:
        if not minimum <= value <= maximum:
            raise refuse(f"must be between {minimum} and {maximum}")
        return value

    return Annotated[int, AfterValidator(check)]


ApprovalCount = _number(0, 10)
Lifetime = _number(1, 86400)
RatePerMinute = _number(1, 1_000_000)
DailyQuota = _number(1, 100_000_000)


def _uri(what: str, *, allow_query: bool):
    """An absolute https URI (http only for loopback hosts), no fragment and no user information."""

    def check(value: str) -> str:
        if len(value) > URI_LENGTH or text_problem(value, max_length=URI_LENGTH) or " " in value:
            raise refuse(f"is not a usable {what}: too long or contains spaces or control characters")
        try:
            parts = urlsplit(value)
            host = parts.hostname or ""
        except ValueError:
            raise refuse(f"{show(value)} is not a valid {what}") from None
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
            raise refuse(f"{show(value)} {problem}")
        return value

    return Annotated[str, AfterValidator(check)]


Audience = _uri("audience", allow_query=False)
RedirectUri = _uri("redirect URI", allow_query=True)
JwksUri = _uri("JWKS URI", allow_query=True)


def _jwks(value: dict) -> dict:
    try:
        return validate_public_jwks(value)
    except InvalidInput as exc:
        # The message names the member (keys[0]) and never echoes key material.
        where, _, rest = exc.message.partition(" ")
        if where.startswith("keys[") and rest:
            raise refuse(rest.rstrip("."), where=where) from None
        raise refuse(exc.message) from None


Jwks = Annotated[dict, AfterValidator(_jwks)]


def _attributes(value: dict) -> dict:
    problems = attribute_problems(value)
    if problems:
        name, reason = problems[0]
        raise refuse(reason, where=name)
    return value


Attributes = Annotated[dict, AfterValidator(_attributes)]


def _timestamp(value: Any) -> Any:
    if isinstance(value, str) and len(value) <= 64:
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise refuse(f"{show(value)} is not an ISO 8601 timestamp") from None
    if not isinstance(value, datetime):
        hint = " (a date alone is ambiguous; add a time and zone)" if isinstance(value, date) else ""
        raise refuse(f"must be a timestamp with a time zone, such as 2030-01-31T00:00:00Z{hint}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise refuse("must carry a time zone (for example a trailing Z for UTC)")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]


def _constraints(value: dict) -> dict:
    """The constraint language's one rule (``governance.enforcement.constraints``), with its path."""
    problems = constraint_problems(value)
    if problems:
        where, reason = problems[0]
        raise refuse(reason, where=where)
    return value


# Parameter constraints (docs/constraints.md), checked by the rule the capability services apply.
Constraints = Annotated[dict[str, Any], AfterValidator(_constraints)]
