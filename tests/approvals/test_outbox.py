"""The outbox: claims are exclusive and fenced, failures back off, lapsed leases are resent, closed
requests send nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from approvals import outbox
from approvals.models import ActionRequest, ApprovalNotification, RequestStatus
from approvals.tasks import resend_unsent, send_notification
from audit.actions import Action, Result
from audit.models import AuditEvent


@pytest.fixture
def row(clinic) -> ApprovalNotification:
    clinic.ask()  # on-commit sends never run inside the test's transaction: rows stay pending
    return ApprovalNotification.objects.get(recipient=clinic.ravi)


def test_a_claim_is_exclusive_until_its_lease_lapses(row):
    first = outbox.notification_claim(notification_id=row.pk)
    assert first is not None and first.attempt == 1
    assert outbox.notification_claim(notification_id=row.pk) is None  # held by the first worker
    ApprovalNotification.objects.filter(pk=row.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    second = outbox.notification_claim(notification_id=row.pk)
    assert second is not None and second.attempt == 2 and second.token != first.token
    # The first worker comes back late: its mark is fenced out, the second one's counts.
    assert outbox.notification_mark_sent(claim=first) is False
    assert outbox.notification_mark_sent(claim=second) is True
    assert outbox.notification_claim(notification_id=row.pk) is None  # sent rows are never claimed again
    assert AuditEvent.objects.filter(action=Action.APPROVAL_NOTIFIED).count() == 1


def test_a_failed_send_backs_off_then_gives_up(row, settings):
    settings.GATEHOUSE_APPROVAL_MAIL_MAX_ATTEMPTS = 2
    claim = outbox.notification_claim(notification_id=row.pk)
    assert outbox.notification_mark_failed(claim=claim, error="SMTPServerDisconnected") == outbox.backoff(1)
    row.refresh_from_db()
    assert row.state == "pending" and row.next_attempt_at > timezone.now()
    assert outbox.notification_claim(notification_id=row.pk) is None  # not due yet
    ApprovalNotification.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    claim = outbox.notification_claim(notification_id=row.pk)
    assert outbox.notification_mark_failed(claim=claim, error="SMTPServerDisconnected") is None
    row.refresh_from_db()
    assert row.state == "failed"
    failure = AuditEvent.objects.get(action=Action.APPROVAL_NOTIFIED)
    assert failure.result == Result.FAILURE


def test_the_task_sends_once_and_is_idempotent(row):
    assert send_notification(row.pk) == "sent"
    assert send_notification(row.pk) == "skipped"
    assert [m.to for m in mail.outbox] == [[row.recipient.email]]


def test_a_broken_mail_server_leaves_the_row_due_for_the_beat_job(row, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 18599, 1  # nobody listens
    assert send_notification(row.pk) == "failed"
    row.refresh_from_db()
    assert row.state == "pending" and row.attempts == 1 and row.last_error
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    ApprovalNotification.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert resend_unsent() >= 1
    row.refresh_from_db()
    assert row.state == "sent"


def test_mail_for_a_closed_request_is_not_sent(clinic, row):
    ActionRequest.objects.filter(pk=row.request_id).update(
        status=RequestStatus.CANCELLED, decided_at=timezone.now()
    )
    assert send_notification(row.pk) == "skipped"
    row.refresh_from_db()
    assert row.state == "failed" and row.last_error == "request closed"
    assert mail.outbox == []


def test_the_email_names_agent_user_action_parameters_expiry_and_a_link(clinic, row):
    claim = outbox.notification_claim(notification_id=row.pk)
    message = outbox.render(ApprovalNotification.objects.get(pk=row.pk), token=claim.token)
    for expected in (
        clinic.agent.name,
        "pat",
        "appointments.cancel",
        '"appointment_id": "A-1"',
        "Expires",
        "risk high",
        "2 approvals needed",
        f"/portal/approvals/link/{claim.token}/",
    ):
        assert expected in message.body
    html = message.alternatives[0][0]
    assert f"/portal/approvals/link/{claim.token}/" in html
    row.refresh_from_db()
    assert row.token_hash != claim.token and len(row.token_hash) == 64  # only the hash is stored
