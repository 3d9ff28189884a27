"""Revocation of django-oauth-toolkit's tokens when governance state changes."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model


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
    refreshed = get_refresh_token_model().objects.filter(user=user, revoked__isnull=True).update(
        revoked=timezone.now()
    )
    _, deleted_access = get_access_token_model().objects.filter(user=user).delete()
    _, deleted_codes = get_grant_model().objects.filter(user=user).delete()
    return {
        "access": sum(v for k, v in deleted_access.items() if k.endswith("AccessToken")),
        "refresh": refreshed,
        "codes": sum(deleted_codes.values()),
    }
