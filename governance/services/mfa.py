"""Second factor (TOTP through django-otp): enrol, confirm, verify, remove; and the step-up demand.

Each function runs in one transaction and records one audit event.  A one-time code is never recorded,
logged or put into an error message; neither is a device's key.  A wrong or throttled code still records
its event (the throttle counter and the audit row commit together) and then raises.
"""

from __future__ import annotations

import re

from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit import services as audit
from audit.actions import Action, Result
from governance.auth_levels import ACR_MFA
from governance.errors import InvalidInput, InvalidState, NotPermitted
from governance.models import User
from governance.services._common import Principal, ensure_can_manage
from governance.tasks import send_new_second_factor_notice

DEFAULT_DEVICE_NAME = "Authenticator app"
RECOVERY_DEVICE_NAME = "Recovery codes"
RECOVERY_CODE_COUNT = 10
# django-otp's random static token: 8 base32 characters (40 bits), single use, throttled like a TOTP code.
_RECOVERY_CODE = re.compile(r"^[a-z2-7]{8}$")


class CodeRefused(InvalidInput):
    """The code did not match (or was already used)."""

    code = "code_refused"


class TooManyAttempts(InvalidState):
    """Wrong codes came too fast; django-otp's back-off is running."""

    code = "too_many_attempts"


def _ensure_self(actor: Principal, user: User) -> None:
    if not isinstance(actor, User) or actor.pk != user.pk or not actor.is_active:
        raise NotPermitted("Only the person themselves can do this with their second factor.")


def confirmed_devices(user: User):
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk")


def has_confirmed_device(user: User) -> bool:
    return bool(user.is_authenticated) and confirmed_devices(user).exists()


def pending_device(user: User, pk: int | None) -> TOTPDevice | None:
    """The device being enrolled (not yet confirmed) with this id, if it is the user's.

    The caller passes the id it remembered when the enrolment started (the portal keeps it in the session
    that started it): a pending device is never looked up by user alone, so no other session can see its
    key or confirm it.
    """
    if not isinstance(pk, int) or isinstance(pk, bool):
        return None
    return TOTPDevice.objects.filter(user=user, confirmed=False, pk=pk).first()


def _proves_current_factor(actor: User, proved_device: Device | None) -> bool:
    """Replacing a second factor needs one of the actor's confirmed ones, freshly proved by the caller."""
    return (
        proved_device is not None
        and proved_device.user_id == actor.pk
        and proved_device.confirmed
        and type(proved_device).objects.filter(pk=proved_device.pk, user=actor, confirmed=True).exists()
    )


def _retry_after(device: TOTPDevice) -> int:
    allowed, info = device.verify_is_allowed()
    if allowed or not info or "locked_until" not in info:
        return 0
    return max(1, int((info["locked_until"] - timezone.now()).total_seconds() + 0.999))


def _check_code(device: TOTPDevice, code: str) -> tuple[bool, int]:
    """(accepted, seconds to wait).  The device row must be locked by the caller."""
    wait = _retry_after(device)
    if wait:
        return False, wait
    code = (code or "").strip().replace(" ", "")
    if not (code.isascii() and code.isdigit() and len(code) == device.digits):
        # Malformed input counts as a wrong guess too, so it cannot be used to probe without back-off.
        device.throttle_increment(commit=True)
        return False, 0
    return bool(device.verify_token(code)), 0


def _refuse(wait: int) -> None:
    if wait:
        raise TooManyAttempts(f"Too many wrong codes. Wait {wait} seconds, then try again.")
    raise CodeRefused("That code is not correct. Enter the current code from your authenticator app.")


def mfa_device_enrol(
    *, actor: Principal, name: str = DEFAULT_DEVICE_NAME, password_confirmed: bool = False
) -> TOTPDevice:
    """Start enrolling a TOTP device for the actor: a new unconfirmed device with a fresh random key.

    The first device needs the password again (``password_confirmed``: the caller just checked it), so a
    session alone (a stolen cookie) cannot give itself a second factor; a refusal is recorded as denied.
    A previous unfinished enrolment is discarded.  Confirmed devices stay until the new one is confirmed
    (replacing a device needs the current one: the views demand a fresh second factor, and
    :func:`mfa_device_confirm` checks it).
    """
    if not isinstance(actor, User):
        raise NotPermitted("Only a signed-in person can enrol a second factor.")
    _ensure_self(actor, actor)
    name = (name or DEFAULT_DEVICE_NAME).strip()[:64] or DEFAULT_DEVICE_NAME
    with transaction.atomic():
        first = not confirmed_devices(actor).exists()
        if first and not password_confirmed:
            audit.record(
                action=Action.MFA_ENROLLED,
                actor=actor,
                target=actor,
                result=Result.DENIED,
                parameters={"kind": "totp", "first_device": True, "reason": "password not confirmed"},
            )
            device = None
        else:
            discarded = TOTPDevice.objects.filter(user=actor, confirmed=False).delete()[0]
            device = TOTPDevice.objects.create(user=actor, name=name, confirmed=False)
            audit.record(
                action=Action.MFA_ENROLLED,
                actor=actor,
                target=actor,
                parameters={
                    "device_id": device.pk,
                    "name": name,
                    "kind": "totp",
                    "first_device": first,
                    "replacing": not first,
                    "discarded_unfinished": discarded,
                },
            )
    if device is None:
        raise NotPermitted("Enter your password to set up your first second factor.")
    return device


def mfa_device_confirm(
    *, actor: Principal, device: TOTPDevice, code: str, proved_device: Device | None = None
) -> TOTPDevice:
    """Activate an enrolled device with a correct code; it replaces the actor's earlier devices.

    Replacing needs the current factor: ``proved_device`` is the actor's confirmed device (an authenticator
    app or recovery codes) that the caller's session proved freshly; without it a replacement is refused
    (recorded as denied) before the code is even looked at.
    """
    if not isinstance(actor, User):
        raise NotPermitted("Only a signed-in person can confirm a second factor.")
    _ensure_self(actor, device.user)
    with transaction.atomic():
        locked = TOTPDevice.objects.select_for_update().filter(pk=device.pk, user=actor).first()
        if locked is None or locked.confirmed:
            raise InvalidState("There is no enrolment waiting for a code. Start again.")
        current = list(confirmed_devices(actor).exclude(pk=locked.pk).values_list("pk", flat=True))
        proved = not current or _proves_current_factor(actor, proved_device)
        accepted, wait = _check_code(locked, code) if proved else (False, 0)
        if accepted:
            TOTPDevice.objects.filter(pk__in=current).delete()
            locked.confirmed = True
            locked.save(update_fields=["confirmed"])
        if accepted:
            outcome: dict = {"replaced_device_ids": current, "first_device": not current}
            # The owner hears of every new second factor, by email, once the change has committed.
            transaction.on_commit(lambda: send_new_second_factor_notice.delay(actor.pk, bool(current)))
        elif not proved:
            outcome = {"reason": "current factor not proved"}
        else:
            outcome = {"reason": "throttled" if wait else "wrong code"}
        audit.record(
            action=Action.MFA_CONFIRMED,
            actor=actor,
            target=actor,
            result=Result.SUCCESS if accepted else (Result.FAILURE if proved and not wait else Result.DENIED),
            parameters={"device_id": locked.pk, "kind": "totp", **outcome},
        )
    if not proved:
        raise NotPermitted("Replacing your authenticator app needs a fresh code from the current one first.")
    if not accepted:
        _refuse(wait)
    device.confirmed = True
    return locked


def _recovery_digest(code: str) -> str:
    """How a recovery code is stored: a keyed SHA-256 (Django's ``salted_hmac``), in django-otp's 16-character
    token column.  The database alone does not give the codes back, nor lets them be guessed offline."""
    return salted_hmac("gatehouse.mfa.recovery_code", code, algorithm="sha256").hexdigest()[:16]


def _normalise_recovery_code(code: str) -> str:
    return (code or "").strip().replace(" ", "").replace("-", "").lower()


def is_recovery_code(code: str) -> bool:
    return bool(_RECOVERY_CODE.match(_normalise_recovery_code(code)))


def recovery_devices(user: User):
    return StaticDevice.objects.filter(user=user, confirmed=True).order_by("pk")


def recovery_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def _check_recovery_code(device: StaticDevice, code: str) -> tuple[bool, int]:
    """(accepted, seconds to wait); a used code is deleted by django-otp.  The row must be locked."""
    wait = _retry_after(device)
    if wait:
        return False, wait
    return bool(device.verify_token(_recovery_digest(_normalise_recovery_code(code)))), 0


def mfa_device_verify(*, actor: Principal, code: str, required_for: str = "") -> Device:
    """Check a code against the actor's second factor (a step-up); records ``step_up.completed``.

    A code from the authenticator app, or one of the actor's recovery codes (each works once).  Returns the
    device that verified, for the session.  ``required_for`` names what asked for the step-up (a path or
    action), for the audit trail.
    """
    if not isinstance(actor, User):
        raise NotPermitted("Only a signed-in person can verify a second factor.")
    _ensure_self(actor, actor)
    with transaction.atomic():
        totp = confirmed_devices(actor).select_for_update().first()
        if totp is None:
            raise InvalidState("You have no second factor yet. Set up an authenticator app first.")
        recovery = recovery_devices(actor).select_for_update().first() if is_recovery_code(code) else None
        if recovery is not None:
            device, kind = recovery, "recovery_code"
            accepted, wait = _check_recovery_code(recovery, code)
        else:
            device, kind = totp, "totp"
            accepted, wait = _check_code(totp, code)
        audit.record(
            action=Action.STEP_UP_COMPLETED,
            actor=actor,
            target=actor,
            result=Result.SUCCESS if accepted else (Result.DENIED if wait else Result.FAILURE),
            parameters={
                "device_id": device.pk,
                "kind": kind,
                "acr": ACR_MFA,
                "required_for": required_for[:200],
                **({"recovery_codes_left": device.token_set.count()} if kind == "recovery_code" else {}),
                **({} if accepted else {"reason": "throttled" if wait else "wrong code"}),
            },
        )
    if not accepted:
        _refuse(wait)
    return device


def mfa_recovery_codes_generate(*, actor: Principal, proved_device: Device | None) -> list[str]:
    """New recovery codes for the actor (the old ones stop working); returned once, to be shown once.

    Needs a confirmed authenticator app and a second factor the caller's session proved freshly
    (``proved_device``).  Stored as keyed digests in django-otp's static device; recorded with the count only.
    """
    if not isinstance(actor, User):
        raise NotPermitted("Only a signed-in person can create recovery codes.")
    _ensure_self(actor, actor)
    if not confirmed_devices(actor).exists():
        raise InvalidState("Set up an authenticator app before creating recovery codes.")
    if not _proves_current_factor(actor, proved_device):
        raise NotPermitted("Creating recovery codes needs a fresh code from your authenticator app.")
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    with transaction.atomic():
        replaced = StaticDevice.objects.filter(user=actor).delete()[1].get("otp_static.StaticToken", 0)
        device = StaticDevice.objects.create(user=actor, name=RECOVERY_DEVICE_NAME, confirmed=True)
        StaticToken.objects.bulk_create(StaticToken(device=device, token=_recovery_digest(c)) for c in codes)
        audit.record(
            action=Action.MFA_RECOVERY_CODES_GENERATED,
            actor=actor,
            target=actor,
            parameters={"device_id": device.pk, "count": len(codes), "unused_codes_voided": replaced},
        )
    return codes


def mfa_device_remove(*, actor: Principal, device: TOTPDevice, reason: str = "") -> None:
    """Remove a second factor: by its owner (after a fresh second factor), or by an organization admin
    resetting a lost one.  Sessions it verified drop back to the password level at once.  Removing the last
    authenticator app voids the recovery codes too (a reset starts over, with the password)."""
    owner = device.user
    if not (isinstance(actor, User) and actor.pk == owner.pk and actor.is_active):
        ensure_can_manage(actor, owner.organization)
    with transaction.atomic():
        locked = TOTPDevice.objects.select_for_update().filter(pk=device.pk).first()
        if locked is None:
            raise InvalidState("That second factor was already removed.")
        device_id, was_confirmed = locked.pk, locked.confirmed
        locked.delete()
        voided = 0
        if not confirmed_devices(owner).exists():
            voided = StaticDevice.objects.filter(user=owner).delete()[1].get("otp_static.StaticToken", 0)
        audit.record(
            action=Action.MFA_REMOVED,
            actor=actor,
            target=owner,
            on_behalf_of=owner,
            parameters={
                "device_id": device_id,
                "kind": "totp",
                "was_confirmed": was_confirmed,
                "recovery_codes_voided": voided,
                "reason": reason[:500],
            },
        )


def step_up_require(
    *, actor: Principal, required_for: str, acr: str, max_age: int | None, current_acr: str | None
) -> None:
    """Record that a page or action demanded a (fresher) second factor the session lacked."""
    with transaction.atomic():
        audit.record(
            action=Action.STEP_UP_REQUIRED,
            actor=actor,
            result=Result.DENIED,
            target=actor if isinstance(actor, User) else None,
            parameters={
                "required_for": required_for[:200],
                "acr": acr,
                "max_age": max_age,
                "current_acr": current_acr,
            },
        )
