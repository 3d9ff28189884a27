"""Checks of single values that need more than a type: e-mail addresses, constraints, JWK Sets."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from governance.errors import InvalidInput
from governance.keys import validate_public_jwks
from governance.models.organizations import attribute_problems
from governance.policy.errors import show
from governance.policy.reader import Reader, join

PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
CONSTRAINT_RULES = {"equals", "in", "max", "min", "pattern", "max_length"}


def email(reader: Reader, entry: dict, path: str) -> str | None:
    value = reader.text(entry, "email", path, max_length=254)
    if value:
        try:
            validate_email(value)
        except ValidationError:
            reader.fail(join(path, "email"), f"{show(value)} is not an e-mail address")
            return None
    return value


def constraints(reader: Reader, value, path: str) -> dict:
    """{parameter: {equals | in | max | min | pattern | max_length: value}}; "$user" is the token's user."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 32:
        reader.fail(path, "must be a mapping of at most 32 parameter names to rules")
        return {}
    for param, rule in value.items():
        where = join(path, str(param))
        if not isinstance(param, str) or not PARAMETER.fullmatch(param):
            reader.fail(where, "is not a usable parameter name")
            continue
        if reader.mapping(rule, where, allowed=CONSTRAINT_RULES) is None:
            continue
        if not rule:
            reader.fail(where, "needs at least one rule")
        for name, operand in rule.items():
            _constraint_operand(reader, name, operand, join(where, name))
    return value


def _constraint_operand(reader: Reader, name: str, operand, path: str) -> None:
    scalar = (str, int, float, bool)
    if name == "equals":
        if not isinstance(operand, scalar) or (isinstance(operand, str) and len(operand) > 200):
            reader.fail(path, "must be a string (at most 200 characters), number or boolean")
    elif name == "in":
        if (
            not isinstance(operand, list)
            or not operand
            or len(operand) > 100
            or not all(isinstance(v, scalar) and not (isinstance(v, str) and len(v) > 200) for v in operand)
        ):
            reader.fail(path, "must be a list of 1 to 100 strings, numbers or booleans")
    elif name in ("max", "min"):
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            reader.fail(path, "must be a number")
    elif name == "max_length":
        if isinstance(operand, bool) or not isinstance(operand, int) or operand < 0:
            reader.fail(path, "must be a whole number, 0 or more")
    elif name == "pattern":
        if not isinstance(operand, str) or len(operand) > 200:
            reader.fail(path, "must be a regular expression of at most 200 characters")
            return
        try:
            re.compile(operand)
        except re.error as exc:
            reader.fail(path, f"is not a valid regular expression: {exc}")


def jwks(reader: Reader, value, path: str) -> dict | None:
    try:
        return validate_public_jwks(value)
    except InvalidInput as exc:
        # The message names the member (keys[0]) and never echoes key material.
        where = exc.message.split(" ", 1)
        if where[0].startswith("keys[") and len(where) == 2:
            reader.fail(join(path, where[0]), where[1])
        else:
            reader.fail(path, exc.message)
        return None


def attributes(reader: Reader, value, path: str) -> dict:
    if value is None:
        return {}
    problems = attribute_problems(value)
    for name, reason in problems:
        reader.fail(join(path, name) if name else path, reason)
    return {} if problems else value
