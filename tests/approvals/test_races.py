"""Races on PostgreSQL: the request row lock serialises approvers, and an approval against the expiry job."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from approvals import services
from approvals.models import ActionRequest, ApprovalDecision, RequestStatus
from governance.errors import GovernanceError

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def race(*calls) -> list:
    """Run each call in its own thread (own connection) released together; return result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait()
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test inspects
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_approvers_at_once_both_count(clinic):
    request = clinic.ask()
    results = race(
        lambda: services.action_request_approve(actor=clinic.ravi, action_request=request),
        lambda: services.action_request_approve(actor=clinic.mei, action_request=request),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    request.refresh_from_db()
    assert (request.status, request.approvals_received) == (RequestStatus.APPROVED, 2)


def test_the_last_approval_is_taken_once(clinic):
    clinic.cancel.approvals_required = 1
    clinic.cancel.save()
    request = clinic.ask()
    results = race(
        lambda: services.action_request_approve(actor=clinic.ravi, action_request=request),
        lambda: services.action_request_approve(actor=clinic.mei, action_request=request),
        lambda: services.action_request_deny(actor=clinic.ali, action_request=request),
    )
    won = [r for r in results if not isinstance(r, Exception)]
    assert len(won) == 1 and all(isinstance(r, GovernanceError) for r in results if r not in won)
    assert ApprovalDecision.objects.filter(request=request).count() == 1


def test_the_same_person_racing_themself_counts_once(clinic):
    request = clinic.ask()
    race(*[lambda: services.action_request_approve(actor=clinic.ravi, action_request=request)] * 3)
    request.refresh_from_db()
    assert request.approvals_received == 1
    assert ApprovalDecision.objects.filter(request=request).count() == 1


def test_approval_against_expiry(clinic):
    clinic.cancel.approvals_required = 1
    clinic.cancel.save()
    request = clinic.ask()
    ActionRequest.objects.filter(pk=request.pk).update(
        expires_at=timezone.now() + timedelta(milliseconds=300)
    )
    threading.Event().wait(0.35)
    race(
        lambda: services.action_request_approve(actor=clinic.ravi, action_request=request),
        lambda: services.action_request_expire(action_request=request),
    )
    request.refresh_from_db()
    assert request.status == RequestStatus.EXPIRED
    assert not ApprovalDecision.objects.filter(request=request).exists()
