"""Celery tasks of the approvals app: thin and idempotent; the outbox and the request rows hold the state."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from approvals import outbox, selectors, services

log = logging.getLogger(__name__)


@shared_task(name="approvals.tasks.send_notification", bind=True, max_retries=None)
def send_notification(self, notification_id: int) -> str:
    """Claim, send, mark: at most one worker sends a row at a time; a lost worker's row is re-sent later."""
    claim = outbox.notification_claim(notification_id=notification_id)
    if claim is None:
        return "skipped"
    try:
        outbox.notification_deliver(claim)
    except Exception as exc:  # noqa: BLE001 - any failure to hand the mail over is retried with back-off
        delay = outbox.notification_mark_failed(claim=claim, error=type(exc).__name__)
        log.warning("approval email %s not sent (%s)", notification_id, type(exc).__name__)
        if delay is None or settings.CELERY_TASK_ALWAYS_EAGER:
            return "failed"  # eager (default run): the beat job, or the next request, tries again
        raise self.retry(countdown=delay, exc=exc) from None
    outbox.notification_mark_sent(claim=claim)
    return "sent"


@shared_task(name="approvals.tasks.resend_unsent")
def resend_unsent() -> int:
    """Beat job: queue every outbox row that is due (never sent, retry time reached, or a lapsed lease)."""
    ids = outbox.due_notification_ids()
    for pk in ids:
        send_notification.apply_async(args=[pk])
    return len(ids)


@shared_task(name="approvals.tasks.remind_pending")
def remind_pending() -> int:
    """Beat job: one reminder per request, this long before it expires."""
    count = 0
    for action_request in selectors.needing_reminder(
        before=timezone.now() + timedelta(seconds=settings.GATEHOUSE_APPROVAL_REMIND_BEFORE_SECONDS)
    ):
        count += services.action_request_remind(action_request=action_request) is not None
    return count


@shared_task(name="approvals.tasks.expire_stale")
def expire_stale() -> int:
    """Beat job: close pending (or approved, unused) requests whose time ran out."""
    count = 0
    for action_request in selectors.stale(at=timezone.now()):
        count += services.action_request_expire(action_request=action_request) is not None
    return count
