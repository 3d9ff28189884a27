"""The constraint language: each operator, validation when a capability is saved, and inputs that try to get
around it (nested objects, huge strings, wrong types, missing parameters, slow patterns)."""

from __future__ import annotations

import pytest

from audit.services import SYSTEM
from governance.enforcement.constraints import (
    MAX_PATTERN_INPUT,
    Violation,
    constraint_problems,
    first_violation,
    pattern_problem,
)
from governance.errors import InvalidInput
from governance.services import capability_create, capability_update
from tests.factories import CapabilityFactory, ToolServerFactory

ALICE = {"user_id": "7", "attributes": {"patient_id": "p-001", "clinic": 3}}


def check(constraints: dict, parameters: dict, **who) -> Violation | None:
    return first_violation(constraints, parameters, **{**ALICE, **who})


# --- each operator ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rules, good, bad",
    [
        ({"equals": "$user"}, "7", ["8", 7, "7 ", None, ["7"], {"id": "7"}]),
        ({"equals": "$user.patient_id"}, "p-001", ["p-002", "P-001", "", ["p-001"], {"$eq": "p-001"}]),
        ({"equals": "$user.clinic"}, 3, ["3", 3.5, True, None]),
        ({"equals": "fixed"}, "fixed", ["Fixed", "fixed\x00", 0]),
        ({"equals": 10}, 10.0, ["10", True, 11]),
        ({"equals": True}, True, [1, "true", False]),
        ({"in": ["a", "b", 3]}, "b", ["c", "3", ["a"], {"a": 1}, True]),
        ({"min": 1, "max": 500}, 500, [0, 501, "100", True, None, [1], 10**30]),
        ({"max_length": 5}, "abcde", ["abcdef", 12345, ["a"]]),
        ({"pattern": r"p-\d{3}"}, "p-123", ["p-1234", "xp-123", "p-123\n", 123, "p-12" + "3" * 300]),
    ],
)
def test_each_operator_allows_what_it_says_and_refuses_the_rest(rules, good, bad):
    constraints = {"param": rules}
    assert check(constraints, {"param": good}) is None
    for value in bad:
        violation = check(constraints, {"param": value})
        assert violation is not None and violation.parameter == "param", value


def test_a_parameter_with_value_rules_is_required_unless_it_says_not():
    assert check({"patient_id": {"equals": "$user.patient_id"}}, {}) == Violation("patient_id", "required")
    assert check({"note": {"max_length": 10, "required": False}}, {}) is None
    assert check({"note": {"max_length": 10, "required": False}}, {"note": "x" * 11}) is not None
    assert check({"date": {"required": True}}, {}) == Violation("date", "required")
    assert check({"date": {"required": True}}, {"date": None}) is None


def test_a_forbidden_parameter_must_be_absent():
    assert check({"override": {"forbidden": True}}, {}) is None
    assert check({"override": {"forbidden": True}}, {"override": None}) == Violation("override", "forbidden")


def test_all_rules_hold_together():
    constraints = {
        "patient_id": {"equals": "$user.patient_id"},
        "amount": {"min": 0, "max": 100},
        "kind": {"in": ["checkup", "follow_up"]},
    }
    assert check(constraints, {"patient_id": "p-001", "amount": 5, "kind": "checkup", "extra": 1}) is None
    assert check(constraints, {"patient_id": "p-001", "amount": 500, "kind": "checkup"}).parameter == "amount"
    assert check(constraints, {"patient_id": "p-001", "amount": 5, "kind": "surgery"}).parameter == "kind"


def test_user_references_fail_closed_without_the_user_or_the_attribute():
    constraints = {"patient_id": {"equals": "$user.patient_id"}}
    assert check(constraints, {"patient_id": "p-001"}, user_id=None) is not None  # a background agent
    assert check(constraints, {"patient_id": "p-001"}, attributes={}) is not None
    assert check(constraints, {"patient_id": "p-001"}, attributes=None) is not None
    # "$user.patient_id" sent as the value is just a string, never a reference.
    assert check(constraints, {"patient_id": "$user.patient_id"}) is not None


def test_stored_constraints_that_are_no_longer_valid_allow_nothing():
    assert check({"x": {"like": 1}}, {"x": 1}) == Violation("", "invalid_constraints")
    assert check({"x": {"pattern": "(a+)+"}}, {"x": "a"}) is not None
    assert check({}, {"anything": 1}) is None


# --- patterns: bounded, and never slow ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["(a+)+$", "(a*)*b", "(a|aa)+", "(?=a)a", "(?!a)b", r"(a)\1", "(?(1)a|b)", "a*b*c*", "x" * 101, "(", ""],
)
def test_slow_or_broken_patterns_are_refused(pattern):
    assert pattern_problem(pattern) is not None


@pytest.mark.parametrize(
    "pattern", [r"p-\d{3}", r"[a-z]+-[0-9]+", r"(?i)[a-z ]{1,80}", r"\w+@\w+", "(ab|cd)e"]
)
def test_simple_patterns_are_accepted(pattern):
    assert pattern_problem(pattern) is None


def test_the_worst_accepted_pattern_on_the_longest_input_still_answers():
    # Two variable repetitions over the same characters: quadratic at worst, on at most 256 characters.
    assert check({"x": {"pattern": r"\w+\w+!"}}, {"x": "a" * MAX_PATTERN_INPUT}) is not None
    assert check({"x": {"pattern": r"\w+"}}, {"x": "a" * (MAX_PATTERN_INPUT + 1)}) is not None  # too long


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "constraints, where",
    [
        ([], ""),
        ({"x": "equals"}, "x"),
        ({"x": {}}, "x"),
        ({"x": {"like": 1}}, "x.like"),
        ({"x": {"equals": {"nested": 1}}}, "x.equals"),
        ({"x": {"equals": "$admin"}}, "x.equals"),
        ({"x": {"equals": "$user.Patient"}}, "x.equals"),
        ({"x": {"equals": "y" * 201}}, "x.equals"),
        ({"x": {"in": []}}, "x.in"),
        ({"x": {"in": [["a"]]}}, "x.in"),
        ({"x": {"in": ["$user"]}}, "x.in"),
        ({"x": {"min": "1"}}, "x.min"),
        ({"x": {"max": True}}, "x.max"),
        ({"x": {"min": 5, "max": 1}}, "x"),
        ({"x": {"max_length": -1}}, "x.max_length"),
        ({"x": {"pattern": "(a+)+"}}, "x.pattern"),
        ({"x": {"required": "yes"}}, "x.required"),
        ({"x": {"forbidden": True, "equals": 1}}, "x"),
        ({"bad name!": {"equals": 1}}, ""),
        ({f"p{i}": {"equals": 1} for i in range(33)}, ""),
    ],
)
def test_invalid_constraints_are_named_by_their_path(constraints, where):
    problems = constraint_problems(constraints)
    assert problems and problems[0][0] == where, problems


@pytest.mark.django_db
def test_the_capability_services_refuse_invalid_constraints():
    server = ToolServerFactory()
    with pytest.raises(InvalidInput) as refused:
        capability_create(
            actor=SYSTEM, tool_server=server, key="records.read_any", constraints={"id": {"pattern": "(a+)+"}}
        )
    assert "constraints.id.pattern" in refused.value.message
    capability = CapabilityFactory(tool_server=server, key="records.read_own")
    with pytest.raises(InvalidInput):
        capability_update(actor=SYSTEM, capability=capability, constraints={"id": {"equals": "$root"}})
    good = {"patient_id": {"equals": "$user.patient_id"}, "note": {"forbidden": True}}
    assert capability_update(actor=SYSTEM, capability=capability, constraints=good).constraints == good
