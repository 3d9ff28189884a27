"""Reads of action requests, already restricted to what the viewer may see."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Exists, OuterRef, QuerySet

from approvals.models import ActionRequest, ApprovalDecision, RequestKind, RequestStatus
from governance.models import Agent, Role, User

RELATED = ("agent__owner", "on_behalf_of", "requested_by", "capability__tool_server", "grant")


def _decided_by(user: User) -> Exists:
    return Exists(ApprovalDecision.objects.filter(request=OuterRef("pk"), approver=user))


def inbox(user: User, *, at: datetime) -> QuerySet[ActionRequest]:
    """Pending, unexpired requests assigned to this person that they have not decided yet."""
    if not user.is_authenticated or not user.is_active:
        return ActionRequest.objects.none()
    return (
        ActionRequest.objects.filter(
            status=RequestStatus.PENDING,
            expires_at__gt=at,
            approvers=user,
            organization_id=user.organization_id,
        )
        .exclude(_decided_by(user))
        .select_related(*RELATED)
        .order_by("expires_at", "pk")
    )


def history(user: User) -> QuerySet[ActionRequest]:
    """Requests this person was asked to decide, or did decide, that are no longer waiting for them."""
    if not user.is_authenticated:
        return ActionRequest.objects.none()
    assigned = ActionRequest.objects.filter(approvers=user, organization_id=user.organization_id)
    return (
        assigned.filter(
            _decided_by(user)
            | ~Exists(ActionRequest.objects.filter(pk=OuterRef("pk"), status=RequestStatus.PENDING))
        )
        .select_related(*RELATED)
        .prefetch_related("decisions__approver")
        .order_by("-created_at", "-pk")
        .distinct()
    )


def visible_to(user: User) -> QuerySet[ActionRequest]:
    """Every request a person may open: assigned to them; or, for an admin, any of the organization's."""
    if not user.is_authenticated or not user.is_active:
        return ActionRequest.objects.none()
    queryset = ActionRequest.objects.select_related(*RELATED).prefetch_related("decisions__approver")
    if user.is_superuser:
        return queryset
    if user.role == Role.ADMIN and user.is_staff:
        return queryset.filter(organization_id=user.organization_id)
    return queryset.filter(approvers=user, organization_id=user.organization_id).distinct()


def of_agent(agent: Agent) -> QuerySet[ActionRequest]:
    """The requests an agent made (what the JSON API lets it read)."""
    return ActionRequest.objects.filter(agent=agent, kind=RequestKind.ACTION).select_related(*RELATED)


def pending_count(user: User, *, at: datetime) -> int:
    return inbox(user, at=at).count()


def needing_reminder(*, before: datetime) -> QuerySet[ActionRequest]:
    return ActionRequest.objects.filter(
        status=RequestStatus.PENDING, reminded_at__isnull=True, expires_at__lte=before
    ).order_by("expires_at")[:500]


def stale(*, at: datetime) -> QuerySet[ActionRequest]:
    return ActionRequest.objects.filter(
        status__in=[RequestStatus.PENDING, RequestStatus.APPROVED], expires_at__lte=at
    ).order_by("expires_at")[:500]


def ciba_request(agent: Agent, auth_req_id_hash: str) -> ActionRequest | None:
    """The CIBA request this agent's own client started under this ``auth_req_id`` (another's: None)."""
    return (
        ActionRequest.objects.filter(
            auth_req_id_hash=auth_req_id_hash,
            agent=agent,
            client_id=agent.application_id,
            kind=RequestKind.ACTION,
        )
        .select_related(*RELATED)
        .first()
    )


def request_for_token(jti: str) -> ActionRequest | None:
    """The action request whose single-use token carries this ``jti`` (None: no request behind it)."""
    if not jti:
        return None
    return ActionRequest.objects.filter(token_jti=jti).exclude(token_issued_at=None).first()
