"""The database refuses forbidden approval states whoever writes them (ORM directly, never a service)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from approvals.migrations import _triggers
from approvals.models import ActionRequest, ApprovalDecision, ApprovalNotification, RequestStatus


def refused(write, errors=IntegrityError) -> None:
    with pytest.raises(errors), transaction.atomic():
        write()


def test_every_trigger_is_installed(clinic):
    assert _triggers.installed(connection) == {name for name, _ in _triggers.NAMES}


def test_approved_needs_enough_approve_decisions(clinic):
    request = clinic.ask()
    rows = ActionRequest.objects.filter(pk=request.pk)
    now = timezone.now()
    # Counts claimed without decisions behind them.
    refused(lambda: rows.update(status=RequestStatus.APPROVED, approvals_received=2, decided_at=now))
    refused(lambda: rows.update(approvals_received=3))
    ApprovalDecision.objects.create(request=request, approver=clinic.ravi, decision="approve")
    refused(lambda: rows.update(status=RequestStatus.APPROVED, approvals_received=2, decided_at=now))
    ApprovalDecision.objects.create(request=request, approver=clinic.mei, decision="approve")
    rows.update(status=RequestStatus.APPROVED, approvals_received=2, decided_at=now)  # the nearest allowed


def test_status_only_moves_forward(clinic):
    request = clinic.ask()
    rows = ActionRequest.objects.filter(pk=request.pk)
    refused(lambda: rows.update(status=RequestStatus.USED))  # used without a time, and never approved
    rows.update(status=RequestStatus.DENIED, decided_at=timezone.now())
    refused(lambda: rows.update(status=RequestStatus.PENDING))
    refused(lambda: rows.update(status=RequestStatus.EXPIRED))


def test_identity_never_changes(clinic):
    request = clinic.ask()
    rows = ActionRequest.objects.filter(pk=request.pk)
    refused(lambda: rows.update(on_behalf_of=clinic.ravi))
    refused(lambda: rows.update(binding_message="something else"))
    refused(lambda: rows.update(approvals_required=1))
    refused(lambda: rows.update(kind="grant", requested_by=clinic.admin))


def test_decisions_are_final_unique_and_only_on_pending_requests(clinic):
    request = clinic.ask()
    decision = ApprovalDecision.objects.create(request=request, approver=clinic.ravi, decision="approve")
    refused(
        lambda: ApprovalDecision.objects.create(request=request, approver=clinic.ravi, decision="approve")
    )
    refused(lambda: ApprovalDecision.objects.filter(pk=decision.pk).update(decision="deny"))
    refused(lambda: ApprovalDecision.objects.filter(pk=decision.pk).delete())
    ActionRequest.objects.filter(pk=request.pk).update(
        status=RequestStatus.CANCELLED, decided_at=timezone.now()
    )
    refused(lambda: ApprovalDecision.objects.create(request=request, approver=clinic.mei, decision="approve"))


def test_nobody_decides_their_own_grant_request(clinic):
    request = ActionRequest.objects.create(
        organization=clinic.org,
        kind="grant",
        agent=clinic.agent,
        on_behalf_of=clinic.pat,
        requested_by=clinic.admin,
        capability=clinic.cancel,
        approvals_required=1,
        expires_at=timezone.now() + timedelta(hours=1),
    )
    refused(
        lambda: ApprovalDecision.objects.create(request=request, approver=clinic.admin, decision="approve")
    )
    ApprovalDecision.objects.create(request=request, approver=clinic.admin2, decision="approve")


def test_row_checks(clinic):
    request = clinic.ask()
    rows = ActionRequest.objects.filter(pk=request.pk)
    refused(lambda: rows.update(status="bogus"))
    refused(lambda: rows.update(token_issued_at=timezone.now()))
    refused(lambda: rows.update(poll_interval=0))
    refused(  # PostgreSQL's varchar answers first (DataError); SQLite needs the CHECK
        lambda: ActionRequest.objects.create(
            organization=clinic.org,
            agent=clinic.agent,
            capability=clinic.cancel,
            approvals_required=1,
            binding_message="x" * 300,
            expires_at=timezone.now(),
        ),
        (IntegrityError, DataError),
    )
    note = ApprovalNotification.objects.filter(request=request).first()
    refused(lambda: ApprovalNotification.objects.filter(pk=note.pk).update(state="sent"))
    refused(lambda: ApprovalNotification.objects.filter(pk=note.pk).update(state="sending"))
    refused(lambda: ApprovalNotification.objects.filter(pk=note.pk).update(link_used_at=timezone.now()))
