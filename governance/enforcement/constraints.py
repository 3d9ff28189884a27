"""The constraint language of capability parameters: small, declarative, no code.

A capability's ``constraints`` is a mapping of parameter name to rules; every rule of every parameter must
hold (all-of).  Rules:

=================  =============================================================================
``equals``         the value equals a literal (string, whole or decimal number, boolean), or
                   ``$user`` (the token user's id, the ``sub`` claim) or ``$user.<attribute>``
``in``             the value is one of a list of 1 to 100 literals
``min`` / ``max``  the value is a number (booleans are not numbers) within the bound, inclusive
``pattern``        the value is a string of at most ``MAX_PATTERN_INPUT`` characters that the pattern
                   matches whole (``re.fullmatch``); patterns are short and simple (see below)
``max_length``     the value is a string of at most this many characters
``required``       ``true``: the parameter must be present; ``false``: the rules apply only when it is
``forbidden``      ``true``: the parameter must be absent (no other rule may be given with it)
=================  =============================================================================

A parameter that carries any value rule is required unless it says ``required: false``: a missing
``patient_id`` must not fall back to a default the tool server picks.  Comparisons are type-strict
(``"7"`` is not ``7``) and nested objects or lists never satisfy a value rule.

Patterns are bounded so that no input can make matching slow (catastrophic backtracking): at most
``MAX_PATTERN_LENGTH`` characters, no back-references, look-arounds or conditionals, no repetition inside a
repetition, no alternation inside a repetition, and at most ``MAX_PATTERN_REPEATS`` variable repetitions
(``+``, ``*``, ``?``, ``{1,5}``; a fixed ``{3}`` is free), so matching is at worst quadratic; the input is
at most ``MAX_PATTERN_INPUT`` characters.  Validation happens when a capability is saved
(:func:`constraint_problems`), evaluation on every decision (:func:`first_violation`).
"""

from __future__ import annotations

import re
import re._constants as _sre_constants  # re.compile's parser (3.11+): walked, never run, to refuse
import re._parser as _sre_parser  # pattern features that backtrack badly
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
USER_REFERENCE = re.compile(r"\$user(?:\.([a-z][a-z0-9_]{0,63}))?\Z")
VALUE_RULES = frozenset({"equals", "in", "min", "max", "pattern", "max_length"})
PRESENCE_RULES = frozenset({"required", "forbidden"})
RULES = VALUE_RULES | PRESENCE_RULES

MAX_PARAMETERS = 32
MAX_LITERAL_LENGTH = 200
MAX_CHOICES = 100
MAX_PATTERN_LENGTH = 100
MAX_PATTERN_REPEATS = 2
MAX_PATTERN_INPUT = 256
MAX_NUMBER = 2**53  # bounds stay exact in every JSON parser

_LITERAL_TYPES = (str, int, float, bool)
_FORBIDDEN_OPCODES = {
    _sre_constants.GROUPREF,
    _sre_constants.GROUPREF_EXISTS,
    _sre_constants.ASSERT,
    _sre_constants.ASSERT_NOT,
}
_REPEATS = {_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT, _sre_constants.POSSESSIVE_REPEAT}


# --- validation (when a capability is saved) -------------------------------------------------------------


def constraint_problems(value: Any) -> list[tuple[str, str]]:
    """(path, reason) for each way ``value`` is not a valid constraints mapping; empty when it is valid.

    Paths are ``parameter`` or ``parameter.rule``; reasons are fixed sentences that never echo a value.
    """
    if value is None:
        return []
    if not isinstance(value, dict):
        return [("", "must be a mapping of parameter names to rules")]
    if len(value) > MAX_PARAMETERS:
        return [("", f"names {len(value)} parameters; at most {MAX_PARAMETERS} are allowed")]
    problems: list[tuple[str, str]] = []
    for name, rules in value.items():
        if not isinstance(name, str) or not PARAMETER.match(name):
            problems.append(("", "parameter names are letters, digits, _, . and -, starting with a letter"))
            continue
        problems.extend(_rule_problems(name, rules))
    return problems


def _rule_problems(name: str, rules: Any) -> list[tuple[str, str]]:
    if not isinstance(rules, dict) or not rules:
        return [(name, "must be a mapping of at least one rule")]
    unknown = [rule for rule in rules if rule not in RULES]
    if unknown:
        known = ", ".join(sorted(RULES))
        return [(f"{name}.{rule}", f"unknown key; the rules are {known}") for rule in unknown[:1]]
    problems = [
        (f"{name}.{rule}", reason) for rule, operand in rules.items() if (reason := _operand(rule, operand))
    ]
    if rules.get("forbidden") is True and len(rules) > 1:
        problems.append((name, "a forbidden parameter takes no other rule"))
    if "min" in rules and "max" in rules and not problems and rules["min"] > rules["max"]:
        problems.append((name, "min is greater than max"))
    return problems


def _literal_problem(operand: Any, *, references: bool) -> str | None:
    if isinstance(operand, str):
        if len(operand) > MAX_LITERAL_LENGTH:
            return f"must be at most {MAX_LITERAL_LENGTH} characters"
        if operand.startswith("$"):
            if references and USER_REFERENCE.match(operand):
                return None
            return (
                "a value starting with $ must be $user or $user.<attribute>"
                if references
                else ("a value starting with $ is reserved")
            )
        return None
    if isinstance(operand, bool):
        return None
    if isinstance(operand, int | float):
        return None if abs(operand) <= MAX_NUMBER else f"must be between -{MAX_NUMBER} and {MAX_NUMBER}"
    return "must be a string, number or boolean"


def _operand(rule: str, operand: Any) -> str | None:
    if rule == "equals":
        return _literal_problem(operand, references=True)
    if rule == "in":
        if not isinstance(operand, list) or not 0 < len(operand) <= MAX_CHOICES:
            return f"must be a list of 1 to {MAX_CHOICES} values"
        for item in operand:
            if problem := _literal_problem(item, references=False):
                return f"each value {problem}"
        return None
    if rule in ("min", "max"):
        if isinstance(operand, bool) or not isinstance(operand, int | float) or abs(operand) > MAX_NUMBER:
            return "must be a number"
        return None
    if rule == "max_length":
        if isinstance(operand, bool) or not isinstance(operand, int) or not 0 <= operand <= 100_000:
            return "must be a whole number from 0 to 100000"
        return None
    if rule in PRESENCE_RULES:
        return None if isinstance(operand, bool) else "must be true or false"
    return pattern_problem(operand)


def pattern_problem(pattern: Any) -> str | None:
    """Why ``pattern`` is not an acceptable constraint pattern, or None."""
    if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN_LENGTH:
        return f"must be a regular expression of 1 to {MAX_PATTERN_LENGTH} characters"
    try:
        parsed = _sre_parser.parse(pattern)
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return "is not a valid regular expression"
    repeats = 0
    stack: list[tuple[Any, bool]] = [(parsed, False)]
    while stack:
        node, inside_repeat = stack.pop()
        for opcode, argument in node:
            if opcode in _FORBIDDEN_OPCODES:
                return "may not use back-references, look-arounds or conditionals"
            if opcode in _REPEATS:
                if inside_repeat:
                    return "may not repeat a repetition (nested quantifiers)"
                low, high = argument[0], argument[1]
                repeats += low != high  # a fixed count ({3}) cannot backtrack
                stack.append((argument[2], True))
            elif opcode == _sre_constants.BRANCH:
                if inside_repeat:
                    return "may not repeat an alternation"
                stack.extend((branch, inside_repeat) for branch in argument[1])
            elif opcode == _sre_constants.SUBPATTERN:
                stack.append((argument[3], inside_repeat))
            elif opcode == _sre_constants.ATOMIC_GROUP:
                stack.append((argument, inside_repeat))
    if repeats > MAX_PATTERN_REPEATS:
        return f"may use at most {MAX_PATTERN_REPEATS} repetitions"
    return None


def constraints_error_sentence(problems: list[tuple[str, str]]) -> str:
    path, reason = problems[0]
    return f"constraints.{path}: {reason}" if path else f"constraints: {reason}"


# --- evaluation (on every decision) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """Which parameter broke which rule: for the audit event, never for the agent's eyes."""

    parameter: str
    rule: str


_MISSING = object()


def user_value(reference: str, *, user_id: str | None, attributes: Mapping[str, Any] | None) -> Any:
    """What ``$user`` / ``$user.<attribute>`` stands for; ``_MISSING`` when there is no such value."""
    match = USER_REFERENCE.match(reference)
    if match is None or user_id is None:
        return _MISSING
    attribute = match.group(1)
    if attribute is None:
        return user_id
    if not isinstance(attributes, Mapping):
        return _MISSING
    return attributes.get(attribute, _MISSING)


def _same(value: Any, expected: Any) -> bool:
    """Type-strict equality: True is not 1 and "1" is not 1; 1 and 1.0 are the same number."""
    if expected is _MISSING:
        return False
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and value is expected
    if isinstance(expected, str) or isinstance(value, str):
        return isinstance(expected, str) and isinstance(value, str) and value == expected
    if isinstance(expected, int | float) and isinstance(value, int | float):
        return value == expected
    return False


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _holds(rule: str, operand: Any, value: Any, *, user_id: str | None, attributes) -> bool:
    if rule == "equals":
        expected = operand
        if isinstance(operand, str) and operand.startswith("$"):
            expected = user_value(operand, user_id=user_id, attributes=attributes)
        return _same(value, expected)
    if rule == "in":
        return any(_same(value, choice) for choice in operand)
    if rule == "min":
        return _number(value) and value >= operand
    if rule == "max":
        return _number(value) and value <= operand
    if rule == "max_length":
        return isinstance(value, str) and len(value) <= operand
    if rule == "pattern":
        if not isinstance(value, str) or len(value) > MAX_PATTERN_INPUT or pattern_problem(operand):
            return False  # a stored pattern that is no longer acceptable allows nothing
        return _compiled(operand).fullmatch(value) is not None
    return True  # required / forbidden are presence rules, judged by the caller


def first_violation(
    constraints: Any,
    parameters: Mapping[str, Any],
    *,
    user_id: str | None,
    attributes: Mapping[str, Any] | None,
) -> Violation | None:
    """The first rule ``parameters`` break (None when every rule holds).

    ``user_id`` is the token user's id (None for a background agent: every ``$user`` rule then fails);
    ``attributes`` the user's attributes.  Unusable stored constraints allow nothing.
    """
    if not constraints:
        return None
    if not isinstance(constraints, dict) or constraint_problems(constraints):
        return Violation(parameter="", rule="invalid_constraints")
    for name, rules in constraints.items():
        value = parameters.get(name, _MISSING)
        if value is _MISSING:
            if rules.get("forbidden") is True:
                continue
            value_rules = VALUE_RULES.intersection(rules)
            required = rules.get("required", bool(value_rules))
            if required:
                return Violation(parameter=name, rule="required")
            continue
        if rules.get("forbidden") is True:
            return Violation(parameter=name, rule="forbidden")
        for rule in sorted(VALUE_RULES.intersection(rules)):
            if not _holds(rule, rules[rule], value, user_id=user_id, attributes=attributes):
                return Violation(parameter=name, rule=rule)
    return None
