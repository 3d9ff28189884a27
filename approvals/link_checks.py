"""Whether an emailed link still works for the person presenting it: one rule for the GET and the POST."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

from approvals import links
from approvals.models import ApprovalNotification, NotificationState, RequestStatus
from governance.models import User


def find(token: object) -> ApprovalNotification | None:
    if not links.well_formed(token):
        return None
    return (
        ApprovalNotification.objects.select_related(
            "recipient",
            "request__agent",
            "request__on_behalf_of",
            "request__requested_by",
            "request__capability__tool_server",
        )
        .filter(token_hash=links.digest(token))
        .first()
    )


def problem(notification: ApprovalNotification | None, user: User, *, now: datetime) -> str | None:
    """None when the link works; else a short code for the audit log (never shown differently to people)."""
    if notification is None:
        return "unknown"
    if notification.recipient_id != user.pk:
        return "another_approver"
    if notification.state != NotificationState.SENT or notification.sent_at is None:
        return "not_sent"
    if notification.link_used_at is not None:
        return "used"
    if notification.sent_at + timedelta(seconds=settings.GATEHOUSE_APPROVAL_LINK_MAX_AGE_SECONDS) <= now:
        return "expired"
    request = notification.request
    if request.status != RequestStatus.PENDING or request.expires_at <= now:
        return "request_closed"
    return None
