"""Revocation of django-oauth-toolkit's tokens: when governance state changes, and at a client's request."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_grant_model,
    get_refresh_token_model,
    revoke_access_token,
)

from audit import services as audit
from audit.actions import Action
from governance.models import Agent, TokenRecord
from governance.oauth.tokens import checksum, redeemed_code


def revoke_application_tokens(application, *, user=None, capability_key: str | None = None) -> dict[str, int]:
    """Revoke live tokens of one OAuth application (optionally one user's, optionally carrying one scope).

    Access tokens and authorization codes are deleted, so introspection answers inactive at once;
    refresh tokens are marked revoked, so a later use is detected as reuse.
    """
    if application is None:
        return {"access": 0, "refresh": 0, "codes": 0}
    access = get_access_token_model().objects.filter(application=application)
    refresh = get_refresh_token_model().objects.filter(application=application, revoked__isnull=True)
    codes = get_grant_model().objects.filter(application=application)
    if user is not None:
        access, refresh, codes = access.filter(user=user), refresh.filter(user=user), codes.filter(user=user)
    if capability_key is not None:
        # A refresh token whose access token is gone could mint the capability again: revoke it too.
        access_ids = [t.pk for t in access.only("pk", "scope") if capability_key in t.scope.split()]
        refresh = refresh.filter(Q(access_token__in=access_ids) | Q(access_token__isnull=True))
        access = access.filter(pk__in=access_ids)
        codes = codes.filter(
            pk__in=[c.pk for c in codes.only("pk", "scope") if capability_key in c.scope.split()]
        )
    refreshed = refresh.update(revoked=timezone.now())
    _, deleted_access = access.delete()
    _, deleted_codes = codes.delete()
    return {
        "access": sum(v for k, v in deleted_access.items() if k.endswith("AccessToken")),
        "refresh": refreshed,
        "codes": sum(deleted_codes.values()),
    }


def revoke_user_tokens(user) -> dict[str, int]:
    """Revoke every live token and authorization code minted for ``user``, whichever client holds it."""
    refreshed = (
        get_refresh_token_model()
        .objects.filter(user=user, revoked__isnull=True)
        .update(revoked=timezone.now())
    )
    _, deleted_access = get_access_token_model().objects.filter(user=user).delete()
    _, deleted_codes = get_grant_model().objects.filter(user=user).delete()
    return {
        "access": sum(v for k, v in deleted_access.items() if k.endswith("AccessToken")),
        "refresh": refreshed,
        "codes": sum(deleted_codes.values()),
    }


def token_revoke(*, actor: Agent | None, application, token: str, token_type_hint: str | None = None) -> bool:
    """RFC 7009 for the client that holds ``token`` (``application``, authenticated by the caller).

    An access token is deleted (introspection answers inactive at once); a refresh token takes its whole
    family with it.  One transaction, one ``token.revoked`` event (identifiers only, never the value).
    Returns False, writing nothing, for a token this client does not hold (the endpoint answers 200 anyway).
    """
    if application is None or getattr(application, "pk", None) is None or not isinstance(token, str):
        return False
    digest = checksum(token)
    access = get_access_token_model().objects.filter(token_checksum=digest, application=application)
    refresh = get_refresh_token_model().objects.filter(token_checksum=digest, application=application)
    order = (refresh, access) if token_type_hint == "refresh_token" else (access, refresh)
    found = next((qs.select_related("user").first() for qs in order if qs.exists()), None)
    if found is None:
        return False
    with transaction.atomic():
        if isinstance(found, get_access_token_model()):
            record = TokenRecord.objects.filter(access_token=found).first()
            parameters = {"token_type": "access_token", "jti": record.jti if record else ""}
            capabilities = record.capability_keys if record else found.scope.split()
            revoke_access_token(found)
        else:
            parameters = {"token_type": "refresh_token", "token_family": str(found.token_family or "")}
            capabilities = []
            _revoke_family(found)
        audit.record(
            action=Action.TOKEN_REVOKED,
            actor=actor,
            agent=actor,
            on_behalf_of=found.user,
            capabilities=capabilities,
            parameters={**parameters, "audience": " ".join(found.resource or [])},
        )
    return True


def refresh_family_revoke(*, actor: Agent | None, refresh_token, reason: str) -> None:
    """Revoke the whole family of ``refresh_token`` (its refresh tokens and their access tokens), e.g. when a
    grant behind it has lapsed.  One transaction, one ``token.revoked`` event naming the family and why."""
    with transaction.atomic():
        _revoke_family(refresh_token)
        audit.record(
            action=Action.TOKEN_REVOKED,
            actor=actor,
            agent=actor,
            on_behalf_of=refresh_token.user,
            parameters={
                "token_type": "refresh_token",
                "token_family": str(refresh_token.token_family or ""),
                "audience": " ".join(refresh_token.resource or []),
                "reason": reason,
            },
        )


def code_tokens_revoke(*, actor: Agent | None, code: str) -> bool:
    """A redeemed authorization code was presented again (RFC 6749 §4.1.2, OAuth 2.1): revoke the access
    token and the whole refresh family its first redemption minted.  One transaction, one ``token.revoked``
    event (identifiers only).  Returns False, writing nothing, when the broker does not remember the code or
    its tokens are already gone."""
    minted = redeemed_code(code)
    if not minted:
        return False
    access = get_access_token_model().objects.filter(token_checksum=minted["access"]).select_related("user")
    refresh = (
        get_refresh_token_model().objects.filter(token_checksum=minted["refresh"]).select_related("user")
        if minted.get("refresh")
        else get_refresh_token_model().objects.none()
    )
    with transaction.atomic():
        found_access = access.select_for_update(of=("self",)).first()
        found_refresh = refresh.first()
        family_alive = found_refresh is not None and (
            get_refresh_token_model()
            .objects.filter(token_family=found_refresh.token_family, revoked__isnull=True)
            .exists()
            if found_refresh.token_family
            else found_refresh.revoked is None
        )
        if found_access is None and not family_alive:
            return False
        some = found_refresh or found_access
        record = TokenRecord.objects.filter(access_token=found_access).first() if found_access else None
        if found_refresh is not None:
            _revoke_family(found_refresh)
        if found_access is not None:
            revoke_access_token(found_access)
        audit.record(
            action=Action.TOKEN_REVOKED,
            actor=actor,
            agent=actor,
            on_behalf_of=some.user,
            capabilities=record.capability_keys if record else [],
            parameters={
                "token_type": "authorization_code",
                "jti": record.jti if record else "",
                "token_family": str(getattr(found_refresh, "token_family", "") or ""),
                "audience": " ".join(some.resource or []),
                "reason": "authorization code replayed",
            },
        )
    return True


def _revoke_family(refresh_token) -> None:
    if refresh_token.token_family:
        get_refresh_token_model().revoke_family(refresh_token.token_family)
    else:
        refresh_token.revoke()
