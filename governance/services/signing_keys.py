"""Access-token signing keys: rotation and retirement (key material itself: governance.oauth.signing_keys)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.actions import Action
from governance.conf import gatehouse_settings
from governance.errors import InvalidInput
from governance.models import SigningKey
from governance.oauth import signing_keys
from governance.services._common import Principal


def signing_key_rotate(*, actor: Principal | None, alg: str | None = None, now: bool = False) -> SigningKey:
    """Create the next key: published at once, signing after ``GATEHOUSE_SIGNING_KEY_PUBLISH_SECONDS`` (at
    once with ``now``); every other unretired key retires then (:func:`signing_key_retire`).

    One ``signing_key.rotated`` event (key ids only), plus one ``signing_key.retired`` per retired key.
    """
    alg = alg or gatehouse_settings.SIGNING_ALG
    if alg not in signing_keys.CURVES:
        raise InvalidInput(f"Unsupported signing algorithm {alg!r}; use ES256 or EdDSA.")
    at = timezone.now()
    activate_at = at if now else at + timedelta(seconds=gatehouse_settings.SIGNING_KEY_PUBLISH_SECONDS)
    with transaction.atomic():
        new = signing_keys.create_key(alg=alg, activate_at=activate_at)
        retiring = list(SigningKey.objects.exclude(pk=new.pk).filter(retired_at__isnull=True))
        parameters = {
            "kid": new.kid,
            "alg": new.alg,
            "signs_from": activate_at.isoformat(),
            "retires": [key.kid for key in retiring],
        }
        audit.record(action=Action.SIGNING_KEY_ROTATED, actor=actor, target=new, parameters=parameters)
        for key in retiring:
            signing_key_retire(actor=actor, key=key, at=activate_at, replaced_by=new)
        transaction.on_commit(signing_keys.forget_signing_key)
    signing_keys.forget_signing_key()
    return new


def signing_key_retire(
    *, actor: Principal | None, key: SigningKey, at: datetime, replaced_by: SigningKey | None = None
) -> None:
    """Stop ``key`` signing from ``at``; it stays published until every token it signed has expired.
    One ``signing_key.retired`` event."""
    with transaction.atomic():
        SigningKey.objects.filter(pk=key.pk, retired_at__isnull=True).update(retired_at=at)
        key.retired_at = at
        parameters = {"kid": key.kid, "retired_at": at.isoformat()}
        if replaced_by is not None:
            parameters["replaced_by"] = replaced_by.kid
        audit.record(action=Action.SIGNING_KEY_RETIRED, actor=actor, target=key, parameters=parameters)
        transaction.on_commit(signing_keys.forget_signing_key)
