"""Reads behind the portal's pages, each restricted to what the viewer may see.

They build on :mod:`governance.selectors` (organization scoping) and read the audit log by its snapshot
columns (``organization_id``, ``agent_id``, ``on_behalf_of_id``), never across organizations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from approvals import selectors as approvals_selectors
from approvals.models import ActionRequest
from audit.actions import Action, Result
from audit.models import AuditEvent
from governance import selectors
from governance.models import Agent, Capability, Grant, RiskLevel, TokenRecord, User
from governance.models.agents import AgentStatus

# Highest risk first.
RISK_ORDER = {RiskLevel.CRITICAL: 0, RiskLevel.HIGH: 1, RiskLevel.MEDIUM: 2, RiskLevel.LOW: 3}
DECISIONS = (Action.DECISION_ALLOWED, Action.DECISION_DENIED)
EXPIRY_WINDOW = timedelta(days=7)


# --- audit events --------------------------------------------------------------------------------------


def events_visible_to(viewer: User) -> QuerySet[AuditEvent]:
    """Audit events of the viewer's organization (all of them for a superuser), newest first."""
    events = AuditEvent.objects.order_by("-seq")
    if viewer.is_superuser:
        return events
    if viewer.organization_id is None:
        return events.none()
    return events.filter(organization_id=viewer.organization_id)


def alerts_for(viewer: User, *, limit: int = 15) -> list[AuditEvent]:
    """Recent denials and elevation attempts (an agent asking beyond its grants: a possible injection)."""
    alerting = Q(result=Result.DENIED) | Q(action=Action.ELEVATION_ATTEMPTED)
    return list(events_visible_to(viewer).filter(alerting)[:limit])


def agent_activity(viewer: User, agent: Agent, *, limit: int = 20) -> list[AuditEvent]:
    return list(events_visible_to(viewer).filter(agent_id=agent.pk)[:limit])


def activity_on_behalf_of(user: User, *, limit: int = 20) -> list[AuditEvent]:
    """What agents did for this person (their own organization's log only)."""
    if user.organization_id is None:
        return []
    return list(
        AuditEvent.objects.filter(organization_id=user.organization_id, on_behalf_of_id=user.pk)
        .exclude(agent_id=None)
        .order_by("-seq")[:limit]
    )


@dataclass(frozen=True)
class DayCount:
    day: date
    decisions: int
    denials: int


def decisions_by_day(viewer: User, *, days: int = 7, now: datetime | None = None) -> list[DayCount]:
    """Decisions (allowed and denied) and denials of any kind per UTC day, oldest first, zero-filled."""
    today = (now or timezone.now()).astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time.min, tzinfo=UTC)
    rows = (
        events_visible_to(viewer)
        .order_by()
        .filter(occurred_at__gte=start)
        .filter(Q(action__in=DECISIONS) | Q(result=Result.DENIED))
        .annotate(day=TruncDate("occurred_at", tzinfo=UTC))
        .values("day")
        .annotate(
            decisions=Count("seq", filter=Q(action__in=DECISIONS)),
            denials=Count("seq", filter=Q(result=Result.DENIED)),
        )
    )
    found = {row["day"]: row for row in rows}
    series = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = found.get(day, {})
        series.append(DayCount(day=day, decisions=row.get("decisions", 0), denials=row.get("denials", 0)))
    return series


# --- approvals -----------------------------------------------------------------------------------------


def pending_approvals(viewer: User, *, limit: int = 20) -> list[ActionRequest]:
    """Approval requests waiting for the viewer's decision (their inbox), soonest to expire first."""
    return list(approvals_selectors.inbox(viewer, at=timezone.now())[:limit])


# --- agents and grants ---------------------------------------------------------------------------------


def agents_by_status(viewer: User) -> dict[str, int]:
    counts = dict(
        selectors.agents_visible_to(viewer).order_by().values_list("status").annotate(n=Count("pk"))
    )
    return {status: counts.get(status, 0) for status in AgentStatus.values}


def grants_expiring(viewer: User, *, within: timedelta = EXPIRY_WINDOW, limit: int = 20) -> list[Grant]:
    now = timezone.now()
    return list(
        selectors.grants_visible_to(viewer)
        .active(at=now)
        .filter(expires_at__lte=now + within)
        .order_by("expires_at")[:limit]
    )


def agent_grants(viewer: User, agent: Agent) -> QuerySet[Grant]:
    """The agent's open grants, grouped by user (service grants first), then capability."""
    return (
        selectors.grants_visible_to(viewer)
        .active()
        .filter(agent=agent)
        .order_by("user__username", "capability__tool_server__name", "capability__key")
    )


def live_tokens(viewer: User, agent: Agent, *, limit: int = 50) -> list[TokenRecord]:
    """Access tokens of this agent that still work: recorded, not revoked (the row is gone), not expired.
    Only facts about them (jti, user, audience, scope, expiry), never a token value."""
    if not selectors.agents_visible_to(viewer).filter(pk=agent.pk).exists():
        return []
    return list(
        TokenRecord.objects.filter(agent=agent, expires_at__gt=timezone.now())
        .select_related("user", "tool_server")
        .order_by("-issued_at")[:limit]
    )


@dataclass
class Exposure:
    """One capability the agent holds right now, and for whom."""

    capability: Capability
    users: list[str] = field(default_factory=list)
    service: bool = False

    @property
    def risk_rank(self) -> int:
        return RISK_ORDER.get(self.capability.risk_level, len(RISK_ORDER))


def blast_radius(viewer: User, agent: Agent) -> list[Exposure]:
    """Everything this agent could do right now if it were compromised: the union of its open grants over
    all users and tool servers, highest risk first, then the widest (most users)."""
    exposures: dict[int, Exposure] = {}
    for grant in agent_grants(viewer, agent):
        exposure = exposures.setdefault(grant.capability_id, Exposure(capability=grant.capability))
        if grant.user_id is None:
            exposure.service = True
        else:
            exposure.users.append(grant.user.username)
    return sorted(
        exposures.values(),
        key=lambda e: (e.risk_rank, -(len(e.users) + e.service), e.capability.key),
    )


@dataclass
class CeilingChange:
    """What replacing an agent's ceiling would do; ``blocked`` removals still have open grants."""

    added: list[Capability]
    removed: list[Capability]
    blocked: dict[str, int]

    @property
    def is_empty(self) -> bool:
        return not self.added and not self.removed


def ceiling_change(agent: Agent, wanted: Iterable[Capability]) -> CeilingChange:
    """A preview of ``agent_set_ceiling``: which capabilities come and go, and which removals it refuses."""
    wanted = {c.pk: c for c in wanted}
    current = {c.pk: c for c in agent.ceiling.select_related("tool_server")}
    removed = sorted((current[pk] for pk in current.keys() - wanted.keys()), key=lambda c: c.key)
    blocked = dict(
        Grant.objects.filter(agent=agent, capability__in=removed, revoked_at__isnull=True)
        .order_by()
        .values_list("capability__key")
        .annotate(n=Count("pk"))
    )
    return CeilingChange(
        added=sorted((wanted[pk] for pk in wanted.keys() - current.keys()), key=lambda c: c.key),
        removed=removed,
        blocked=blocked,
    )


# --- the signed-in person's own page ------------------------------------------------------------------


@dataclass
class AgentForMe:
    agent: Agent
    grants: list[Grant]


def my_agents(user: User) -> list[AgentForMe]:
    """The agents holding an open grant for this person, each with those grants."""
    grants = (
        Grant.objects.active()
        .filter(user=user)
        .select_related("agent__owner", "capability__tool_server")
        .order_by("agent__name", "capability__tool_server__name", "capability__key")
    )
    mine: dict[int, AgentForMe] = {}
    for grant in grants:
        mine.setdefault(grant.agent_id, AgentForMe(agent=grant.agent, grants=[])).grants.append(grant)
    return list(mine.values())


def my_grants(user: User) -> QuerySet[Grant]:
    """Open grants naming this person: the only grants their own revoke buttons reach."""
    return Grant.objects.active().filter(user=user).select_related("agent", "capability")
