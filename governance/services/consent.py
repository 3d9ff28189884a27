"""Consent at the authorization endpoint: a user grants an agent capabilities for themselves.

What a user may consent to is decided here, not in the page: only for themselves, only for an active
interactive agent of their own organization, only inside the agent's ceiling, and never a capability
that needs an approver (high or critical risk, or ``requires_approval``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from audit.actions import Action, Result
from governance.conf import gatehouse_settings
from governance.errors import InvalidInput, InvalidState, NotPermitted
from governance.models import Agent, Capability, Grant, RiskLevel, User
from governance.models.agents import AgentKind
from governance.services._common import integrity

APPROVER_RISK_LEVELS = RiskLevel.high_risk()


def consent_lifetime() -> timedelta:
    """How long a grant given by consent lasts; renewing consent extends it again."""
    return gatehouse_settings.CONSENT_LIFETIME


def needs_approver(capability: Capability) -> bool:
    """True when granting this capability is an approver's decision, not the user's."""
    return capability.requires_approval or capability.risk_level in APPROVER_RISK_LEVELS


@dataclass
class ConsentResult:
    created: list[Grant] = field(default_factory=list)
    renewed: list[Grant] = field(default_factory=list)
    unchanged: list[Grant] = field(default_factory=list)

    @property
    def grants(self) -> list[Grant]:
        return self.created + self.renewed + self.unchanged


def _check_consenter(actor: User, agent: Agent) -> None:
    if not isinstance(actor, User) or not actor.is_active:
        raise NotPermitted("Only a signed-in, active user can give consent.")
    if actor.organization_id is None or actor.organization_id != agent.organization_id:
        raise NotPermitted("You can only consent for agents of your own organization.")
    if not agent.is_active:
        raise InvalidState(f"The agent {agent.name} is {agent.status}; it cannot receive consent.")
    if agent.kind != AgentKind.INTERACTIVE:
        raise InvalidInput("A background agent acts for no user; there is nothing to consent to.")


def _check_consentable(agent: Agent, capabilities: list[Capability]) -> None:
    ceiling = set(agent.ceiling.values_list("pk", flat=True))
    outside = sorted(c.key for c in capabilities if c.pk not in ceiling)
    if outside:
        raise NotPermitted(f"These capabilities are outside the agent's ceiling: {', '.join(outside)}.")
    approver = sorted(c.key for c in capabilities if needs_approver(c))
    if approver:
        raise NotPermitted(f"These capabilities need an approver, not consent: {', '.join(approver)}.")


def grant_consent(
    *,
    actor: User,
    agent: Agent,
    capabilities: Iterable[Capability],
    audience: str = "",
    not_granted: Mapping[str, Iterable[str]] | None = None,
) -> ConsentResult:
    """Create or renew ``actor``'s own grants to ``agent`` for ``capabilities``; one ``consent.given`` event.

    ``not_granted`` lists, per reason, what the agent asked for that consent cannot give (for the record).
    """
    capabilities = sorted({c.pk: c for c in capabilities}.values(), key=lambda c: c.key)
    if not capabilities:
        raise InvalidInput("Nothing to consent to.")
    _check_consenter(actor, agent)
    _check_consentable(agent, capabilities)
    now = timezone.now()
    expires_at: datetime = now + consent_lifetime()
    result = ConsentResult()
    try:
        with transaction.atomic():
            for capability in capabilities:
                _consent_one(
                    actor=actor,
                    agent=agent,
                    capability=capability,
                    now=now,
                    expires_at=expires_at,
                    result=result,
                )
            audit.record(
                action=Action.CONSENT_GIVEN,
                actor=actor,
                agent=agent,
                on_behalf_of=actor,
                capabilities=[c.key for c in capabilities],
                parameters={
                    "audience": audience,
                    "client_id": agent.application.client_id if agent.application_id else "",
                    "expires_at": expires_at,
                    "created": sorted(g.capability.key for g in result.created),
                    "renewed": sorted(g.capability.key for g in result.renewed),
                    "unchanged": sorted(g.capability.key for g in result.unchanged),
                    "not_granted": {
                        reason: sorted(keys) for reason, keys in (not_granted or {}).items() if keys
                    },
                },
            )
    except IntegrityError as exc:
        raise integrity(exc) from exc
    return result


def _consent_one(
    *,
    actor: User,
    agent: Agent,
    capability: Capability,
    now: datetime,
    expires_at: datetime,
    result: ConsentResult,
) -> None:
    open_grants = list(
        Grant.objects.select_for_update().filter(
            agent=agent, capability=capability, user=actor, revoked_at__isnull=True
        )
    )
    for existing in open_grants:
        if existing.is_active(at=now):
            # Consent never shortens a grant an admin gave (no expiry, or a later one).
            if existing.expires_at is not None and existing.expires_at < expires_at:
                existing.expires_at = expires_at
                existing.save(update_fields=["expires_at"])
                result.renewed.append(existing)
            else:
                result.unchanged.append(existing)
            return
        existing.revoked_at, existing.revoke_reason = now, "expired; superseded by consent"
        existing.save(update_fields=["revoked_at", "revoke_reason"])
    result.created.append(
        Grant.objects.create(
            organization_id=agent.organization_id,
            agent=agent,
            capability=capability,
            user=actor,
            expires_at=expires_at,
            granted_by=actor,
            reason="consent at the authorization endpoint",
        )
    )


def consent_deny(*, actor: User, agent: Agent, capabilities: Iterable[str], audience: str = "") -> None:
    """The user declined the agent's request; nothing changes but the record."""
    with transaction.atomic():
        audit.record(
            action=Action.CONSENT_DENIED,
            actor=actor,
            agent=agent,
            on_behalf_of=actor,
            result=Result.DENIED,
            capabilities=list(capabilities),
            parameters={
                "audience": audience,
                "client_id": agent.application.client_id if agent.application_id else "",
            },
        )


def authorization_refuse(
    *,
    actor: User,
    agent: Agent | None,
    reason: str,
    client_id: str = "",
    audience: str = "",
    capabilities: Iterable[str] = (),
) -> None:
    """Record an authorization request Gatehouse refused before the user could decide."""
    with transaction.atomic():
        audit.record(
            action=Action.TOKEN_REFUSED,
            actor=actor,
            agent=agent,
            on_behalf_of=actor if isinstance(actor, User) else None,
            result=Result.DENIED,
            capabilities=list(capabilities),
            parameters={
                "endpoint": "authorize",
                "reason": reason,
                "client_id": client_id,
                "audience": audience,
            },
        )
