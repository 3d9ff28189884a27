"""RFC 7591 initial access tokens: admin-issued credentials for dynamic client registration."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.actions import Action
from governance.errors import InvalidInput
from governance.models import Capability, InitialAccessToken, Organization, User
from governance.services._common import Principal, ensure_can_manage
from governance.text import text_problem


def initial_access_token_create(
    *,
    actor: Principal,
    organization: Organization,
    ceiling: list[str],
    max_uses: int = 1,
    lifetime: timedelta | None = None,
    label: str = "",
) -> tuple[str, InitialAccessToken]:
    """Create a token; the value is returned once and only its SHA-256 is stored (it is 256 random bits).

    The audit event names who made it, for which organization and how far it reaches; never the value.
    """
    ensure_can_manage(actor, organization)
    known = set(
        Capability.objects.filter(tool_server__organization=organization, key__in=ceiling).values_list(
            "key", flat=True
        )
    )
    unknown = sorted(set(ceiling) - known)
    if unknown:
        raise InvalidInput(f"Unknown capabilities for this organization: {', '.join(unknown)}.")
    if max_uses < 1:
        raise InvalidInput("An initial access token needs at least one use.")
    if problem := text_problem(label, max_length=200):
        raise InvalidInput(f"label: {problem}", errors={"label": [problem]})
    value = secrets.token_urlsafe(32)
    with transaction.atomic():
        token = InitialAccessToken.objects.create(
            organization=organization,
            token_hash=hashlib.sha256(value.encode()).hexdigest(),
            label=label,
            ceiling=" ".join(sorted(known)),
            max_uses=max_uses,
            created_by=actor if isinstance(actor, User) else None,
            expires_at=timezone.now() + (lifetime or timedelta(hours=24)),
        )
        audit.record(
            action=Action.INITIAL_ACCESS_TOKEN_CREATED,
            actor=actor,
            organization=organization,
            target=token,
            capabilities=token.ceiling.split(),
            parameters={"max_uses": token.max_uses, "expires_at": token.expires_at.isoformat()},
        )
    return value, token
