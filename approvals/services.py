"""Action requests from creation to use: each function one transaction and one audit event.

The request row is locked (``select_for_update``) by every transition, so two approvers deciding at once,
or an approval racing the expiry job, are serialised: the second sees the first's outcome.  Database
triggers (approvals/migrations/_triggers.py) refuse what slips past these checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Least
from django.utils import timezone

from approvals import policy
from approvals.details import clean_binding_message, clean_details
from approvals.models import (
    MAX_REASON,
    ActionRequest,
    ApprovalDecision,
    ApprovalNotification,
    Channel,
    Decision,
    NotificationKind,
    RequestKind,
    RequestStatus,
)
from audit import services as audit
from audit.actions import Action, ActorType, Result
from audit.services import SYSTEM, Actor
from governance.errors import Conflict, InvalidInput, InvalidState, NotPermitted
from governance.models import Agent, Capability, Grant, User
from governance.selectors import active_grants
from governance.services import grant_create
from governance.services._common import Principal, database_rules, ensure_can_manage
from governance.services.grants import check_grant

SEND_TASK = "approvals.tasks.send_notification"
MAX_POLL_INTERVAL = 60  # seconds: slow_down never makes a CIBA client wait longer between polls


def _audit_details(action_request: ActionRequest) -> dict:
    return {"request": str(action_request.public_id), "kind": action_request.kind}


def _deliver_after_commit(notification_ids: list[int]) -> None:
    """Queue one send task per outbox row once the transaction that wrote them commits."""

    def send() -> None:
        task = current_app.tasks[SEND_TASK]
        for pk in notification_ids:
            try:
                task.apply_async(args=[pk])
            except Exception:  # noqa: BLE001 - the broker is down: the row stays due and the beat job sends it
                return

    transaction.on_commit(send)


def _assign_and_notify(action_request: ActionRequest, approvers: list[User], now: datetime) -> list[int]:
    action_request.approvers.set(approvers)
    rows = ApprovalNotification.objects.bulk_create(
        ApprovalNotification(
            request=action_request, recipient=person, kind=NotificationKind.REQUEST, next_attempt_at=now
        )
        for person in approvers
        if person.email
    )
    return [row.pk for row in rows]


def _expiry(capability: Capability, requested_expiry: int | None, now: datetime) -> datetime:
    seconds = capability.approval_expiry_seconds
    if requested_expiry is not None:
        if (
            isinstance(requested_expiry, bool)
            or not isinstance(requested_expiry, int)
            or requested_expiry < 1
        ):
            raise InvalidInput(
                "requested_expiry: a positive number of seconds.",
                errors={"requested_expiry": ["A positive integer."]},
            )
        seconds = min(seconds, requested_expiry)
    return now + timedelta(seconds=seconds)


def no_grant_message(capability: Capability) -> str:
    """The refusal for a user without a grant; also for an unknown user, so the two cannot be told apart."""
    return f"The agent holds no active grant of {capability.key} for this user."


def _check_enough(approvers: list[User], required: int) -> None:
    if len(approvers) < required:
        raise InvalidState(
            f"Too few people may approve this request ({len(approvers)} of the {required} needed)."
        )


def action_request_create(
    *,
    actor: Agent,
    capability: Capability,
    on_behalf_of: User | None,
    authorization_details: object,
    binding_message: object = "",
    requested_expiry: int | None = None,
    auth_req_id_hash: str | None = None,
    poll_interval: int | None = None,
) -> ActionRequest:
    """An agent asks to perform one exact action that its capability's policy says people must approve.

    The agent must hold an active grant of the capability (for ``on_behalf_of``, or its own service grant).
    One email per eligible approver is written to the outbox in the same transaction and sent after commit.
    ``auth_req_id_hash`` and ``poll_interval`` are for the CIBA backchannel endpoint.
    """
    if not isinstance(actor, Agent) or not actor.is_active:
        raise NotPermitted("Only an active agent can ask for approval.")
    if capability.tool_server.organization_id != actor.organization_id:
        raise NotPermitted("The capability belongs to another organization.")
    if not capability.requires_approval:
        raise InvalidInput(
            f"{capability.key} does not need approval; ask for a token instead.",
            errors={"capability": ["Needs no approval."]},
        )
    details = clean_details(authorization_details, capability_key=capability.key)
    message = clean_binding_message(binding_message)
    now = timezone.now()
    expires_at = _expiry(capability, requested_expiry, now)
    if not active_grants(agent=actor, user=on_behalf_of, at=now).filter(capability=capability).exists():
        raise NotPermitted(no_grant_message(capability))
    with database_rules(), transaction.atomic():
        action_request = ActionRequest.objects.create(
            organization_id=actor.organization_id,
            kind=RequestKind.ACTION,
            agent=actor,
            on_behalf_of=on_behalf_of,
            capability=capability,
            authorization_details=details,
            binding_message=message,
            approvals_required=capability.approvals_required,
            denial_ends_request=not capability.tolerate_denials,
            expires_at=expires_at,
            client_id=actor.application_id,
            auth_req_id_hash=auth_req_id_hash,
            poll_interval=poll_interval or settings.GATEHOUSE_APPROVAL_POLL_INTERVAL_SECONDS,
        )
        approvers = list(policy.eligible_approvers(action_request))
        _check_enough(approvers, action_request.approvals_required)
        notifications = _assign_and_notify(action_request, approvers, now)
        audit.record(
            action=Action.APPROVAL_REQUESTED,
            actor=actor,
            agent=actor,
            on_behalf_of=on_behalf_of,
            target=action_request,
            capabilities=[capability.key],
            parameters={
                **_audit_details(action_request),
                "authorization_details": details,
                "binding_message": message,
                "approvers": len(approvers),
                "approvals_required": action_request.approvals_required,
                "expires_at": expires_at,
            },
        )
        _deliver_after_commit(notifications)
    return action_request


def grant_request_create(
    *,
    actor: User,
    agent: Agent,
    capability: Capability,
    user: User | None = None,
    expires_at: datetime | None = None,
    reason: str = "",
) -> ActionRequest:
    """An admin asks for a grant that needs a second admin: the grant exists only once another approves."""
    ensure_can_manage(actor, agent.organization)
    if not isinstance(actor, User):
        raise NotPermitted("Only a person proposes a grant for approval.")
    check_grant(agent=agent, capability=capability, user=user, expires_at=expires_at)
    if Grant.objects.active().filter(agent=agent, capability=capability, user=user).exists():
        raise Conflict(f"{capability.key} is already granted; renew or revoke that grant.")
    message = clean_binding_message(reason)
    now = timezone.now()
    with database_rules(), transaction.atomic():
        if (
            ActionRequest.objects.pending()
            .filter(
                kind=RequestKind.GRANT,
                agent=agent,
                capability=capability,
                on_behalf_of=user,
                expires_at__gt=now,
            )
            .exists()
        ):
            raise Conflict(f"A grant of {capability.key} for this agent and user is already waiting.")
        action_request = ActionRequest.objects.create(
            organization_id=agent.organization_id,
            kind=RequestKind.GRANT,
            agent=agent,
            on_behalf_of=user,
            requested_by=actor,
            capability=capability,
            authorization_details=[
                {
                    "type": "gatehouse_grant",
                    "agent": agent.name,
                    "user": user.username if user else None,
                    "capability": capability.key,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                }
            ],
            binding_message=message,
            approvals_required=1,
            denial_ends_request=True,
            expires_at=now + timedelta(seconds=settings.GATEHOUSE_GRANT_APPROVAL_EXPIRY_SECONDS),
            grant_expires_at=expires_at,
        )
        approvers = list(policy.eligible_approvers(action_request))
        _check_enough(approvers, 1)
        notifications = _assign_and_notify(action_request, approvers, now)
        audit.record(
            action=Action.APPROVAL_REQUESTED,
            actor=actor,
            agent=agent,
            on_behalf_of=user,
            target=action_request,
            capabilities=[capability.key],
            parameters={
                **_audit_details(action_request),
                "reason": message,
                "approvers": len(approvers),
                "grant_expires_at": expires_at,
            },
        )
        _deliver_after_commit(notifications)
    return action_request


def _locked(action_request: ActionRequest) -> ActionRequest:
    return (
        ActionRequest.objects.select_for_update(of=("self",))
        .select_related("capability__tool_server", "agent", "on_behalf_of", "requested_by")
        .get(pk=action_request.pk)
    )


def _clean_reason(reason: object) -> str:
    if not isinstance(reason, str):
        raise InvalidInput("reason: text.", errors={"reason": ["Not text."]})
    reason = reason.strip()
    if len(reason) > MAX_REASON or "\x00" in reason:
        raise InvalidInput(
            f"reason: at most {MAX_REASON} characters of text.", errors={"reason": ["Invalid."]}
        )
    return reason


@dataclass(frozen=True)
class LinkUse:
    """The emailed link a decision came through (checked and spent in the deciding transaction)."""

    notification_id: int


def _check_decidable(locked: ActionRequest, actor: User, link: LinkUse | None, now: datetime) -> None:
    if locked.status != RequestStatus.PENDING:
        raise InvalidState(f"This request is already {locked.get_status_display().lower()}.")
    if locked.expires_at <= now:
        raise InvalidState("This request has expired.")
    if not isinstance(actor, User) or not policy.may_decide(actor, locked):
        raise NotPermitted("You may not decide this request.")
    if ApprovalDecision.objects.filter(request=locked, approver=actor).exists():
        raise Conflict("You have already decided this request; a person counts once.")
    if link is not None:
        spent = ApprovalNotification.objects.filter(
            pk=link.notification_id,
            request=locked,
            recipient=actor,
            link_used_at__isnull=True,
            state=ApprovalNotification.State.SENT,
        ).update(link_used_at=now)
        if spent != 1:
            raise NotPermitted("This link is not valid.")


def action_request_approve(
    *, actor: User, action_request: ActionRequest, reason: str = "", link: LinkUse | None = None
) -> ActionRequest:
    """Add one approval; the request is approved once enough people agree (a permission change: granted)."""
    reason = _clean_reason(reason)
    now = timezone.now()
    with database_rules(), transaction.atomic():
        locked = _locked(action_request)
        _check_decidable(locked, actor, link, now)
        ApprovalDecision.objects.create(
            request=locked,
            approver=actor,
            decision=Decision.APPROVE,
            reason=reason,
            channel=Channel.LINK if link else Channel.INBOX,
        )
        locked.approvals_received += 1
        complete = locked.approvals_received >= locked.approvals_required
        fields = ["approvals_received"]
        if complete:
            locked.status, locked.decided_at = RequestStatus.APPROVED, now
            fields += ["status", "decided_at"]
            if locked.kind == RequestKind.GRANT:
                # The grant is the requesting admin's (granted_by), made now that a second admin agreed.
                locked.grant = grant_create(
                    actor=locked.requested_by,
                    agent=locked.agent,
                    capability=locked.capability,
                    user=locked.on_behalf_of,
                    expires_at=locked.grant_expires_at,
                    reason=f"{locked.binding_message} (approved by {actor.username}, "
                    f"request {locked.public_id})".strip(),
                )
                fields.append("grant")
        locked.save(update_fields=fields)
        audit.record(
            action=Action.APPROVAL_APPROVED,
            actor=actor,
            agent=locked.agent,
            on_behalf_of=locked.on_behalf_of,
            target=locked,
            capabilities=[locked.capability.key],
            parameters={
                **_audit_details(locked),
                "approvals": locked.approvals_received,
                "required": locked.approvals_required,
                "complete": complete,
                "channel": Channel.LINK if link else Channel.INBOX,
                "reason": reason,
            },
        )
    return locked


def action_request_deny(
    *, actor: User, action_request: ActionRequest, reason: str = "", link: LinkUse | None = None
) -> ActionRequest:
    """Record one denial.  It ends the request, unless the policy says otherwise; then the request ends
    only when too few undecided approvers remain to reach the count."""
    reason = _clean_reason(reason)
    now = timezone.now()
    with database_rules(), transaction.atomic():
        locked = _locked(action_request)
        _check_decidable(locked, actor, link, now)
        ApprovalDecision.objects.create(
            request=locked,
            approver=actor,
            decision=Decision.DENY,
            reason=reason,
            channel=Channel.LINK if link else Channel.INBOX,
        )
        ended = locked.denial_ends_request
        if not ended:
            decided = ApprovalDecision.objects.filter(request=locked).values("approver_id")
            undecided = (
                policy.eligible_approvers(locked)
                .filter(pk__in=locked.approvers.values("pk"))
                .exclude(pk__in=decided)
                .count()
            )
            ended = locked.approvals_received + undecided < locked.approvals_required
        if ended:
            locked.status, locked.decided_at = RequestStatus.DENIED, now
            locked.save(update_fields=["status", "decided_at"])
        audit.record(
            action=Action.APPROVAL_DENIED,
            actor=actor,
            agent=locked.agent,
            on_behalf_of=locked.on_behalf_of,
            target=locked,
            capabilities=[locked.capability.key],
            result=Result.DENIED if ended else Result.SUCCESS,
            parameters={
                **_audit_details(locked),
                "ended": ended,
                "reason": reason,
                "channel": Channel.LINK if link else Channel.INBOX,
            },
        )
    return locked


def action_request_cancel(
    *, actor: Principal | Agent, action_request: ActionRequest, reason: str = ""
) -> ActionRequest:
    """The requesting agent (or, for a permission change, the requesting admin) or an organization admin
    withdraws a pending request."""
    reason = _clean_reason(reason)
    with database_rules(), transaction.atomic():
        locked = _locked(action_request)
        if isinstance(actor, Agent):
            if locked.kind != RequestKind.ACTION or actor.pk != locked.agent_id:
                raise NotPermitted("You may not cancel this request.")
        elif not (isinstance(actor, User) and actor.pk == locked.requested_by_id):
            ensure_can_manage(actor, locked.organization)
        if locked.status != RequestStatus.PENDING:
            raise InvalidState(f"This request is already {locked.get_status_display().lower()}.")
        locked.status, locked.decided_at = RequestStatus.CANCELLED, timezone.now()
        locked.save(update_fields=["status", "decided_at"])
        audit.record(
            action=Action.APPROVAL_CANCELLED,
            actor=actor,
            agent=locked.agent,
            on_behalf_of=locked.on_behalf_of,
            target=locked,
            capabilities=[locked.capability.key],
            parameters={**_audit_details(locked), "reason": reason},
        )
    return locked


def action_request_expire(*, actor: Actor = SYSTEM, action_request: ActionRequest) -> ActionRequest | None:
    """Close a request whose time ran out (pending, or approved but never used).  None: nothing to do."""
    now = timezone.now()
    with transaction.atomic():
        locked = _locked(action_request)
        if locked.status not in (RequestStatus.PENDING, RequestStatus.APPROVED) or locked.expires_at > now:
            return None
        previous = locked.status
        locked.status = RequestStatus.EXPIRED
        locked.decided_at = locked.decided_at or now
        locked.save(update_fields=["status", "decided_at"])
        audit.record(
            action=Action.APPROVAL_EXPIRED,
            actor=actor,
            agent=locked.agent,
            on_behalf_of=locked.on_behalf_of,
            target=locked,
            capabilities=[locked.capability.key],
            parameters={**_audit_details(locked), "was": previous, "approvals": locked.approvals_received},
        )
    return locked


def action_request_remind(*, actor: Actor = SYSTEM, action_request: ActionRequest) -> ActionRequest | None:
    """Queue one reminder to each assigned approver who has not decided yet (once per request)."""
    now = timezone.now()
    with database_rules(), transaction.atomic():
        locked = _locked(action_request)
        if (
            locked.status != RequestStatus.PENDING
            or locked.reminded_at is not None
            or locked.expires_at <= now
        ):
            return None
        decided = ApprovalDecision.objects.filter(request=locked).values("approver_id")
        people = list(
            policy.eligible_approvers(locked)
            .filter(pk__in=locked.approvers.values("pk"))
            .exclude(pk__in=decided)
            .exclude(email="")
        )
        rows = ApprovalNotification.objects.bulk_create(
            ApprovalNotification(
                request=locked, recipient=person, kind=NotificationKind.REMINDER, next_attempt_at=now
            )
            for person in people
        )
        locked.reminded_at = now
        locked.save(update_fields=["reminded_at"])
        audit.record(
            action=Action.APPROVAL_REMINDED,
            actor=actor,
            agent=locked.agent,
            on_behalf_of=locked.on_behalf_of,
            target=locked,
            capabilities=[locked.capability.key],
            parameters={**_audit_details(locked), "reminders": len(rows), "expires_at": locked.expires_at},
        )
        _deliver_after_commit([row.pk for row in rows])
    return locked


def action_request_token_issued(*, actor: Agent, action_request: ActionRequest, jti: str) -> ActionRequest:
    """The one token bound to an approved request was issued (called by the CIBA grant inside its issuance
    transaction).  A second issuance is refused: the caller answers ``invalid_grant``."""
    now = timezone.now()
    with database_rules(), transaction.atomic():
        locked = _locked(action_request)
        if not isinstance(actor, Agent) or actor.pk != locked.agent_id:
            raise NotPermitted("Only the requesting agent receives this request's token.")
        if locked.status != RequestStatus.APPROVED or locked.expires_at <= now:
            raise InvalidState("This request is not approved.")
        if locked.token_issued_at is not None:
            raise InvalidState("This request's token was already issued.")
        locked.token_issued_at, locked.token_jti = now, jti[:64]
        locked.save(update_fields=["token_issued_at", "token_jti"])
        audit.record(
            action=Action.APPROVAL_TOKEN_ISSUED,
            actor=actor,
            agent=locked.agent,
            on_behalf_of=locked.on_behalf_of,
            target=locked,
            capabilities=[locked.capability.key],
            parameters={**_audit_details(locked), "jti": locked.token_jti},
        )
    return locked


def action_request_mark_used(*, actor: Principal, action_request: ActionRequest) -> ActionRequest:
    """The approved action was performed (the decision API accepted its single-use token): approved → used.

    A second use is refused (InvalidState), so the caller denies the call."""
    with database_rules(), transaction.atomic():
        locked = _locked(action_request)
        if locked.status != RequestStatus.APPROVED:
            raise InvalidState(f"This request is {locked.get_status_display().lower()}, not approved.")
        locked.status, locked.used_at = RequestStatus.USED, timezone.now()
        locked.save(update_fields=["status", "used_at"])
        audit.record(
            action=Action.APPROVAL_TOKEN_USED,
            actor=actor,
            agent=locked.agent,
            on_behalf_of=locked.on_behalf_of,
            target=locked,
            capabilities=[locked.capability.key],
            parameters={**_audit_details(locked), "jti": locked.token_jti},
        )
    return locked


def action_request_register_poll(*, action_request: ActionRequest) -> bool:
    """CIBA poll bookkeeping: True when this poll came at least ``poll_interval`` after the previous one.
    Else the caller answers ``slow_down`` and the interval grows by 5 s (OpenID CIBA Core §11: the client
    adds 5 s too), up to :data:`MAX_POLL_INTERVAL`.  Conditional UPDATEs, so concurrent polls cannot both
    pass.  Not audited: polls are frequent and change nothing but their own clock."""
    now = timezone.now()
    rows = ActionRequest.objects.filter(pk=action_request.pk)
    earliest = now - timedelta(seconds=action_request.poll_interval)
    on_time = Q(last_polled_at__isnull=True) | Q(last_polled_at__lte=earliest)
    if rows.filter(on_time).update(last_polled_at=now):
        return True
    rows.filter(poll_interval__lt=MAX_POLL_INTERVAL).update(
        poll_interval=Least(F("poll_interval") + 5, MAX_POLL_INTERVAL)
    )
    return False


def approval_link_open(*, actor: User, notification: ApprovalNotification) -> ApprovalNotification:
    """An approver opened their emailed link (signed in): recorded; nothing is decided by opening."""
    with transaction.atomic():
        first = ApprovalNotification.objects.filter(pk=notification.pk, link_opened_at__isnull=True).update(
            link_opened_at=timezone.now()
        )
        action_request = notification.request
        audit.record(
            action=Action.APPROVAL_LINK_OPENED,
            actor=actor,
            agent=action_request.agent,
            on_behalf_of=action_request.on_behalf_of,
            target=action_request,
            capabilities=[action_request.capability.key],
            parameters={**_audit_details(action_request), "first": bool(first), "kind": notification.kind},
        )
    return notification


def approval_link_refuse(*, actor: User, notification: ApprovalNotification | None, why: str) -> None:
    """A signed-in person presented a link that does not work for them (unknown, spent, expired, someone
    else's, or its request is closed): recorded without the token, and without naming another's request."""
    mine = notification is not None and notification.recipient_id == actor.pk
    with transaction.atomic():
        audit.record(
            action=Action.APPROVAL_LINK_REFUSED,
            actor=actor,
            result=Result.DENIED,
            target=notification.request if mine else None,
            parameters={"why": why, **({"request": str(notification.request.public_id)} if mine else {})},
        )


def action_request_refuse(*, actor: Agent | None, why: str) -> None:
    """An agent's attempt to create or read a request was refused: recorded, nothing else written."""
    with transaction.atomic():
        audit.record(
            action=Action.APPROVAL_REFUSED,
            actor=actor if actor is not None else Actor(type=ActorType.ANONYMOUS),
            result=Result.DENIED,
            agent=actor,
            parameters={"why": why[:300]},
        )
