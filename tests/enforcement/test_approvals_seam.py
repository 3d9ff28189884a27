"""The approvals seam: an approved call (RFC 9396 ``authorization_details`` as the approvals app writes them:
``type`` the capability key, every other member a parameter) matches only the exact call, and each approved
entry passes once."""

from __future__ import annotations

import time

import pytest

from governance.enforcement import approvals

APPROVED = {
    "authorization_details": [
        {"type": "appointments.book", "appointment_id": 42, "reason": "ill"},
        {"type": "appointments.cancel", "appointment_id": 42, "reason": "ill"},
    ]
}


def entry(claims=APPROVED, key="appointments.cancel", **parameters):
    return approvals.approved_entry(
        claims,
        capability_key=key,
        parameters=parameters or {"appointment_id": 42, "reason": "ill"},
    )


def test_the_exact_call_matches_its_entry():
    assert entry() == 1
    assert entry(reason="ill", appointment_id=42) == 1  # member order does not matter
    assert entry(key="appointments.book") == 0


@pytest.mark.parametrize(
    "change",
    [
        {"appointment_id": 43, "reason": "ill"},
        {"appointment_id": "42", "reason": "ill"},
        {"appointment_id": 42.5, "reason": "ill"},
        {"appointment_id": 42},
        {"appointment_id": 42, "reason": "ill", "also": "this"},
        {"appointment_id": [42], "reason": "ill"},
        {"appointment_id": 42, "reason": "ill", "type": "appointments.cancel"},
    ],
)
def test_other_parameters_match_nothing(change):
    assert entry(**change) is None


def test_another_capability_or_no_details_match_nothing():
    assert entry(key="prescriptions.request") is None
    assert entry(claims={}) is None
    assert entry(claims={"authorization_details": "appointments.cancel"}) is None
    assert entry(claims={"authorization_details": [["appointments.cancel"]]}) is None


def test_true_is_not_one():
    claims = {"authorization_details": [{"type": "a.b", "x": True}]}
    assert approvals.approved_entry(claims, capability_key="a.b", parameters={"x": 1}) is None
    assert approvals.approved_entry(claims, capability_key="a.b", parameters={"x": True}) == 0


def test_an_approved_entry_is_used_once(settings):
    settings.GATEHOUSE_RATE_LIMIT_REDIS_URL = ""
    now = time.time()
    jti = f"jti-{now}"
    assert approvals.consume(jti=jti, index=1, expires_at=now + 60, now=now) is True
    assert approvals.consume(jti=jti, index=1, expires_at=now + 60, now=now) is False
    assert approvals.consume(jti=jti, index=0, expires_at=now + 60, now=now) is True
