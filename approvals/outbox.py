"""Delivering the approval emails written to the outbox (``ApprovalNotification``), exactly once if possible.

One delivery is: **claim** the row (state ``sending``, a lease, one more attempt, and a fresh link token whose
hash replaces the previous one) and commit; **send** it over SMTP outside any transaction; **mark** it
``sent`` (audited as ``approval.notified``).  A worker that dies before the mail server accepted the message
leaves a ``sending`` row whose lease lapses; the beat job (``resend_unsent``) then claims it again.  A failure
puts the row back to ``pending`` with a back-off; after the last attempt it is ``failed`` (audited).

The one duplicate window: the mail server accepted the message and the worker died before the ``sent`` mark
committed.  The resent email carries a new link, and the first email's link stops working (its hash was
replaced), so at most one of the two can ever decide.  A row whose request is no longer pending is closed
without sending.  Claims and retries are outbox bookkeeping and are not audited; outcomes are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from approvals import links
from approvals.models import ApprovalNotification, NotificationState, RequestStatus
from audit import services as audit
from audit.actions import Action, Result
from audit.services import SYSTEM

BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 900


@dataclass(frozen=True)
class Claim:
    """One worker's right to send one outbox row: the attempt number fences a stale worker out."""

    notification_id: int
    attempt: int
    token: str


def backoff(attempt: int) -> int:
    return min(BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0), BACKOFF_MAX_SECONDS)


def due() -> Q:
    """Rows ready to be (re)sent now: pending and due, or claimed by a worker whose lease has lapsed."""
    now = timezone.now()
    return Q(state=NotificationState.PENDING, next_attempt_at__lte=now) | Q(
        state=NotificationState.SENDING, lease_expires_at__lte=now
    )


def notification_claim(*, notification_id: int) -> Claim | None:
    """Take the row for one send attempt; None when it is not due, someone else holds it, or it is done."""
    now = timezone.now()
    with transaction.atomic():
        row = (
            ApprovalNotification.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("request")
            .filter(due(), pk=notification_id)
            .first()
        )
        if row is None:
            return None
        if row.request.status != RequestStatus.PENDING or row.request.expires_at <= now:
            row.state, row.last_error, row.lease_expires_at = NotificationState.FAILED, "request closed", None
            row.save(update_fields=["state", "last_error", "lease_expires_at"])
            return None
        token, token_hash = links.new_secret()
        row.state = NotificationState.SENDING
        row.attempts += 1
        row.lease_expires_at = now + timedelta(seconds=settings.GATEHOUSE_APPROVAL_MAIL_LEASE_SECONDS)
        row.token_hash = token_hash
        row.save(update_fields=["state", "attempts", "lease_expires_at", "token_hash"])
    return Claim(notification_id=row.pk, attempt=row.attempts, token=token)


def render(notification: ApprovalNotification, *, token: str) -> EmailMultiAlternatives:
    """The email for one row: plain text and HTML from templates; agent-controlled values are escaped by the
    template engine in HTML and appear only as data (never in headers) in both."""
    action_request = notification.request
    context = {
        "notification": notification,
        "action_request": action_request,
        "capability": action_request.capability,
        "recipient": notification.recipient,
        "link": links.link_url(token),
        "parameters": action_request.details_json,
        "reminder": notification.kind == ApprovalNotification.Kind.REMINDER,
    }
    subject = render_to_string("approvals/email/subject.txt", context).strip().splitlines()[0][:200]
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("approvals/email/request.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[notification.recipient.email],
    )
    message.attach_alternative(render_to_string("approvals/email/request.html", context), "text/html")
    return message


def notification_deliver(claim: Claim) -> None:
    """Send the claimed row over the configured mail backend (raises when the server does not accept it)."""
    notification = ApprovalNotification.objects.select_related(
        "recipient",
        "request__agent",
        "request__on_behalf_of",
        "request__requested_by",
        "request__capability__tool_server",
    ).get(pk=claim.notification_id)
    render(notification, token=claim.token).send(fail_silently=False)


def notification_mark_sent(*, claim: Claim) -> bool:
    """The mail server accepted the message.  False when this claim was superseded (its lease lapsed)."""
    now = timezone.now()
    with transaction.atomic():
        updated = ApprovalNotification.objects.filter(
            pk=claim.notification_id, state=NotificationState.SENDING, attempts=claim.attempt
        ).update(state=NotificationState.SENT, sent_at=now, lease_expires_at=None, last_error="")
        if not updated:
            return False
        row = ApprovalNotification.objects.select_related(
            "request__agent", "request__capability", "request__on_behalf_of"
        ).get(pk=claim.notification_id)
        audit.record(
            action=Action.APPROVAL_NOTIFIED,
            actor=SYSTEM,
            agent=row.request.agent,
            on_behalf_of=row.request.on_behalf_of,
            target=row.request,
            capabilities=[row.request.capability.key],
            parameters={
                "request": str(row.request.public_id),
                "recipient": row.recipient_id,
                "kind": row.kind,
                "attempt": claim.attempt,
            },
        )
    return True


def notification_mark_failed(*, claim: Claim, error: str) -> int | None:
    """The send failed: back to pending after a back-off (returned, in seconds), or ``failed`` for good."""
    now = timezone.now()
    with transaction.atomic():
        row = (
            ApprovalNotification.objects.select_for_update(of=("self",))
            .select_related("request__agent", "request__capability", "request__on_behalf_of")
            .filter(pk=claim.notification_id, state=NotificationState.SENDING, attempts=claim.attempt)
            .first()
        )
        if row is None:
            return None
        row.last_error = error[:200]
        row.lease_expires_at = None
        if row.attempts >= settings.GATEHOUSE_APPROVAL_MAIL_MAX_ATTEMPTS:
            row.state = NotificationState.FAILED
            row.save(update_fields=["state", "last_error", "lease_expires_at"])
            audit.record(
                action=Action.APPROVAL_NOTIFIED,
                actor=SYSTEM,
                result=Result.FAILURE,
                agent=row.request.agent,
                on_behalf_of=row.request.on_behalf_of,
                target=row.request,
                capabilities=[row.request.capability.key],
                parameters={
                    "request": str(row.request.public_id),
                    "recipient": row.recipient_id,
                    "kind": row.kind,
                    "attempts": row.attempts,
                    "error": row.last_error,
                },
            )
            return None
        delay = backoff(row.attempts)
        row.state = NotificationState.PENDING
        row.next_attempt_at = now + timedelta(seconds=delay)
        row.save(update_fields=["state", "last_error", "lease_expires_at", "next_attempt_at"])
    return delay


def due_notification_ids(limit: int = 500) -> list[int]:
    return list(
        ApprovalNotification.objects.filter(due())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
