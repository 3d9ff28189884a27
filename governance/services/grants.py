"""Grants: user × agent × capability, and their revocation."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.actions import Action
from governance.errors import Conflict, InvalidInput, InvalidState
from governance.models import Agent, Capability, Grant, User
from governance.models.agents import AgentKind, AgentStatus
from governance.services._common import Principal, database_rules, ensure_can_manage
from governance.services.tokens import revoke_application_tokens


def check_grant(
    *, agent: Agent, capability: Capability, user: User | None, expires_at: datetime | None
) -> None:
    """The rules a new grant must meet (also checked before a grant is proposed for approval)."""
    if agent.status == AgentStatus.RETIRED:
        raise InvalidState("A retired agent cannot receive grants.")
    if capability.tool_server.organization_id != agent.organization_id:
        raise InvalidInput("The capability belongs to another organization.")
    if agent.kind == AgentKind.BACKGROUND and user is not None:
        raise InvalidInput("A background agent's grant is its own; it cannot name a user.")
    if agent.kind == AgentKind.INTERACTIVE and user is None:
        raise InvalidInput("An interactive agent acts for a user; name the user.")
    if user is not None and user.organization_id != agent.organization_id:
        raise InvalidInput("The user belongs to another organization.")
    if user is not None and not user.is_active:
        raise InvalidState("The user is deactivated.")
    if not agent.ceiling.filter(pk=capability.pk).exists():
        raise InvalidInput(f"{capability.key} is outside this agent's ceiling.")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("The expiry must be in the future.")


def grant_create(
    *,
    actor: Principal,
    agent: Agent,
    capability: Capability,
    user: User | None = None,
    expires_at: datetime | None = None,
    reason: str = "",
) -> Grant:
    """Grant a capability.  An expired, never-revoked grant for the same triple is closed first."""
    ensure_can_manage(actor, agent.organization)
    check_grant(agent=agent, capability=capability, user=user, expires_at=expires_at)
    now = timezone.now()
    with database_rules(), transaction.atomic():
        # Lock the agent: a retirement committing meanwhile must not be followed by a fresh grant.
        if Agent.objects.select_for_update().filter(pk=agent.pk).values_list("status", flat=True).get() == (
            AgentStatus.RETIRED
        ):
            raise InvalidState("A retired agent cannot receive grants.")
        open_grants = Grant.objects.select_for_update().filter(
            agent=agent, capability=capability, user=user, revoked_at__isnull=True
        )
        superseded = None
        for existing in open_grants:
            if existing.is_active(at=now):
                raise Conflict(f"{capability.key} is already granted; renew or revoke that grant.")
            existing.revoked_at, existing.revoke_reason = now, "expired; superseded by a new grant"
            existing.save(update_fields=["revoked_at", "revoke_reason"])
            superseded = existing.pk
        grant = Grant.objects.create(
            organization_id=agent.organization_id,
            agent=agent,
            capability=capability,
            user=user,
            expires_at=expires_at,
            reason=reason,
            granted_by=actor if isinstance(actor, User) else None,
        )
        audit.record(
            action=Action.GRANT_CREATED,
            actor=actor,
            agent=agent,
            on_behalf_of=user,
            target=grant,
            capabilities=[capability.key],
            parameters={"expires_at": expires_at, "reason": reason, "superseded_grant": superseded},
        )
    return grant


def grant_renew(*, actor: Principal, grant: Grant, expires_at: datetime | None, reason: str = "") -> Grant:
    """Move an open grant's expiry (None: no expiry).  The same expiry again writes nothing."""
    ensure_can_manage(actor, grant.organization)
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("The expiry must be in the future.")
    with database_rules(), transaction.atomic():
        # of=("self",): PostgreSQL cannot lock the nullable side of an outer join (user, application).
        locked = (
            Grant.objects.select_for_update(of=("self",))
            .select_related("agent", "user", "capability")
            .get(pk=grant.pk)
        )
        if locked.revoked_at is not None:
            raise InvalidState("A revoked grant cannot be renewed; create a new one.")
        if locked.agent.status == AgentStatus.RETIRED:
            raise InvalidState("A retired agent's grants cannot be renewed.")
        if locked.user is not None and not locked.user.is_active:
            raise InvalidState("The user is deactivated.")
        previous = locked.expires_at
        if previous == expires_at:
            return grant
        locked.expires_at = expires_at
        locked.save(update_fields=["expires_at"])
        audit.record(
            action=Action.GRANT_RENEWED,
            actor=actor,
            agent=locked.agent,
            on_behalf_of=locked.user,
            target=locked,
            capabilities=[locked.capability.key],
            parameters={"from": previous, "to": expires_at, "reason": reason},
        )
    grant.expires_at = expires_at
    return grant


def _ensure_can_revoke(actor: Principal, grant: Grant) -> None:
    """Admins revoke their organization's grants; anyone may withdraw a grant that names them."""
    names_actor = isinstance(actor, User) and grant.user_id is not None and grant.user_id == actor.pk
    if names_actor and actor.is_active:
        return
    ensure_can_manage(actor, grant.organization)


def grant_revoke(*, actor: Principal, grant: Grant, reason: str) -> Grant:
    """Close the grant and revoke the tokens that carry its capability for that user and agent.

    Admins of the grant's organization may revoke it, and so may the person the grant names (their own
    consent withdrawn); nobody else.
    """
    _ensure_can_revoke(actor, grant)
    with database_rules(), transaction.atomic():
        locked = (
            Grant.objects.select_for_update(of=("self",))
            .select_related("agent__application", "user", "capability")
            .get(pk=grant.pk)
        )
        _ensure_can_revoke(actor, locked)  # the row as stored decides, not the caller's copy
        if locked.revoked_at is not None:
            raise InvalidState("The grant is already revoked.")
        locked.revoked_at = timezone.now()
        locked.revoked_by = actor if isinstance(actor, User) else None
        locked.revoke_reason = reason
        locked.save(update_fields=["revoked_at", "revoked_by", "revoke_reason"])
        revoked = revoke_application_tokens(
            locked.agent.application, user=locked.user, capability_key=locked.capability.key
        )
        audit.record(
            action=Action.GRANT_REVOKED,
            actor=actor,
            agent=locked.agent,
            on_behalf_of=locked.user,
            target=locked,
            capabilities=[locked.capability.key],
            parameters={"reason": reason, "revoked": revoked},
        )
    grant.revoked_at, grant.revoked_by, grant.revoke_reason = locked.revoked_at, locked.revoked_by, reason
    return grant
