"""Action requests that wait for people (two-person rule), the approvers' decisions, and the mail outbox.

Rules that span rows (an approval needs enough approve decisions, decisions are final, a request's identity
never changes, its status moves only forward) are database triggers: see approvals/migrations/_triggers.py.
"""

from __future__ import annotations

import json
import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Length
from django.db.models.lookups import LessThanOrEqual

MAX_BINDING_MESSAGE = 256
MAX_REASON = 1000


class RequestKind(models.TextChoices):
    ACTION = "action", "Agent action"
    GRANT = "grant", "Permission change"


class RequestStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"
    USED = "used", "Used"


class ActionRequestQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(status=RequestStatus.PENDING)


class ActionRequest(models.Model):
    """One high-stakes action (or one grant of a high-risk capability) waiting for approvers.

    ``authorization_details`` is the exact action, as RFC 9396 objects whose ``type`` is the capability key.
    For a permission change (kind ``grant``) ``agent``/``on_behalf_of``/``capability`` describe the grant
    asked for and ``requested_by`` is the admin asking.  The CIBA fields (``auth_req_id_hash``, ``client``,
    ``poll_interval``, ``last_polled_at``, ``token_*``) are set by the backchannel endpoint and the CIBA
    grant; see docs/approvals.md.
    """

    Kind = RequestKind
    Status = RequestStatus

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(
        "governance.Organization", on_delete=models.PROTECT, related_name="action_requests"
    )
    kind = models.CharField(max_length=16, choices=RequestKind.choices, default=RequestKind.ACTION)
    agent = models.ForeignKey("governance.Agent", on_delete=models.PROTECT, related_name="action_requests")
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The admin who asked for a permission change (empty for an agent's request).",
    )
    capability = models.ForeignKey(
        "governance.Capability", on_delete=models.PROTECT, related_name="action_requests"
    )
    authorization_details = models.JSONField(default=list)
    binding_message = models.CharField(max_length=MAX_BINDING_MESSAGE, blank=True)
    status = models.CharField(max_length=16, choices=RequestStatus.choices, default=RequestStatus.PENDING)
    approvals_required = models.PositiveSmallIntegerField()
    approvals_received = models.PositiveSmallIntegerField(default=0)
    denial_ends_request = models.BooleanField(default=True)
    approvers = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="approval_assignments",
        help_text="Who could approve when the request was made (each is re-checked when deciding).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    reminded_at = models.DateTimeField(null=True, blank=True)
    # A permission change: the grant's expiry when asked, and the grant once approved.
    grant_expires_at = models.DateTimeField(null=True, blank=True)
    grant = models.ForeignKey(
        "governance.Grant", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # The requesting OAuth client, and what CIBA poll mode needs (OpenID CIBA Core 1.0 §7.3, §11).
    client = models.ForeignKey(
        "oauth2_provider.Application", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    auth_req_id_hash = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    poll_interval = models.PositiveSmallIntegerField(default=5)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    # The single-use token bound to this request: issued once, used once.
    token_issued_at = models.DateTimeField(null=True, blank=True)
    token_jti = models.CharField(max_length=64, blank=True)
    used_at = models.DateTimeField(null=True, blank=True)

    objects = ActionRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="actionrequest_status_expiry"),
            models.Index(fields=["organization", "status"], name="actionrequest_org_status"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=RequestStatus.values), name="actionrequest_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(kind__in=RequestKind.values), name="actionrequest_kind_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(approvals_required__gte=1)
                & models.Q(approvals_received__lte=models.F("approvals_required")),
                name="actionrequest_approval_counts",
            ),
            models.CheckConstraint(
                condition=~models.Q(status__in=[RequestStatus.APPROVED, RequestStatus.USED])
                | models.Q(approvals_received__gte=models.F("approvals_required")),
                name="actionrequest_approved_has_approvals",
            ),
            models.CheckConstraint(
                condition=models.Q(status=RequestStatus.PENDING) | models.Q(decided_at__isnull=False),
                name="actionrequest_decided_has_time",
            ),
            models.CheckConstraint(
                condition=(models.Q(status=RequestStatus.USED) & models.Q(used_at__isnull=False))
                | (~models.Q(status=RequestStatus.USED) & models.Q(used_at__isnull=True)),
                name="actionrequest_used_has_time",
            ),
            models.CheckConstraint(
                condition=models.Q(token_issued_at__isnull=True)
                | models.Q(status__in=[RequestStatus.APPROVED, RequestStatus.USED, RequestStatus.EXPIRED]),
                name="actionrequest_token_only_when_approved",
            ),
            models.CheckConstraint(
                condition=models.Q(kind=RequestKind.ACTION) | models.Q(requested_by__isnull=False),
                name="actionrequest_grant_has_requester",
            ),
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("binding_message"), MAX_BINDING_MESSAGE),
                name="actionrequest_binding_message_bounded",
            ),
            models.CheckConstraint(
                condition=models.Q(poll_interval__gte=1), name="actionrequest_poll_interval_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.capability.key} ({self.get_status_display().lower()})"

    @property
    def details_json(self) -> str:
        """The exact parameters, pretty-printed for people (escape it wherever it is shown)."""
        return json.dumps(self.authorization_details, indent=2, ensure_ascii=False)

    @property
    def approvals_needed(self) -> int:
        return max(self.approvals_required - self.approvals_received, 0)


class Decision(models.TextChoices):
    APPROVE = "approve", "Approve"
    DENY = "deny", "Deny"


class Channel(models.TextChoices):
    INBOX = "inbox", "Inbox"
    LINK = "link", "Emailed link"


class ApprovalDecision(models.Model):
    """One person's approve or deny on one request; final (the database refuses updates and deletes)."""

    request = models.ForeignKey(ActionRequest, on_delete=models.PROTECT, related_name="decisions")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    reason = models.TextField(blank=True)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.INBOX)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # The same person approving twice counts once: they cannot decide twice at all.
            models.UniqueConstraint(fields=["request", "approver"], name="approvaldecision_once_per_person"),
            models.CheckConstraint(
                condition=models.Q(decision__in=Decision.values), name="approvaldecision_decision_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(channel__in=Channel.values), name="approvaldecision_channel_valid"
            ),
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("reason"), MAX_REASON),
                name="approvaldecision_reason_bounded",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.approver} {self.decision}"


class NotificationKind(models.TextChoices):
    REQUEST = "request", "New request"
    REMINDER = "reminder", "Reminder before expiry"


class NotificationState(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    SENDING = "sending", "Claimed by a worker"
    SENT = "sent", "Accepted by the mail server"
    FAILED = "failed", "Gave up"


class ApprovalNotification(models.Model):
    """An email to one approver about one request: the outbox row, and that email's one-time link.

    Written in the same transaction as the request (or the reminder); a worker claims it (state ``sending``
    with a lease), sends, then marks it ``sent``.  Only a hash of the link's token is stored; a new token is
    drawn at each claim, so a link from an attempt that never reached the mail server never works.
    """

    Kind = NotificationKind
    State = NotificationState

    request = models.ForeignKey(ActionRequest, on_delete=models.PROTECT, related_name="notifications")
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=NotificationKind.choices, default=NotificationKind.REQUEST)
    state = models.CharField(
        max_length=16, choices=NotificationState.choices, default=NotificationState.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    link_opened_at = models.DateTimeField(null=True, blank=True)
    link_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="approvalnotif_due")]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "recipient", "kind"], name="approvalnotification_one_per_kind"
            ),
            models.CheckConstraint(
                condition=models.Q(state__in=NotificationState.values),
                name="approvalnotification_state_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(kind__in=NotificationKind.values), name="approvalnotification_kind_valid"
            ),
            models.CheckConstraint(
                condition=~models.Q(state=NotificationState.SENT) | models.Q(sent_at__isnull=False),
                name="approvalnotification_sent_has_time",
            ),
            models.CheckConstraint(
                condition=~models.Q(state=NotificationState.SENDING)
                | models.Q(lease_expires_at__isnull=False),
                name="approvalnotification_sending_has_lease",
            ),
            models.CheckConstraint(
                condition=models.Q(link_used_at__isnull=True) | models.Q(state=NotificationState.SENT),
                name="approvalnotification_used_link_was_sent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to {self.recipient}"
