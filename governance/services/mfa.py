"""Second factor (TOTP through django-otp): enrol, confirm, verify, remove; and the step-up demand.

Each function runs in one transaction and records one audit event.  A one-time code is never recorded,
logged or put into an error message; neither is a device's key.  A wrong or throttled code still records
its event (the throttle counter and the audit row commit together) and then raises.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit import services as audit
from audit.actions import Action, Result
from governance.auth_levels import ACR_MFA
from governance.errors import InvalidInput, InvalidState, NotPermitted
from governance.models import User
from governance.services._common import Principal, ensure_can_manage

DEFAULT_DEVICE_NAME = "Authenticator app"


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


def pending_device(user: User) -> TOTPDevice | None:
    """The device being enrolled (not yet confirmed), if any."""
    return TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()


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


def mfa_device_enrol(*, actor: Principal, name: str = DEFAULT_DEVICE_NAME) -> TOTPDevice:
    """Start enrolling a TOTP device for the actor: a new unconfirmed device with a fresh random key.

    A previous unfinished enrolment is discarded.  Confirmed devices stay until the new one is confirmed
    (replacing a device needs a fresh second factor: the views enforce it with ``require_step_up``).
    """
    if not isinstance(actor, User):
        raise NotPermitted("Only a signed-in person can enrol a second factor.")
    _ensure_self(actor, actor)
    name = (name or DEFAULT_DEVICE_NAME).strip()[:64] or DEFAULT_DEVICE_NAME
    with transaction.atomic():
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
                "replacing": confirmed_devices(actor).exists(),
                "discarded_unfinished": discarded,
            },
        )
    return device


def mfa_device_confirm(*, actor: Principal, device: TOTPDevice, code: str) -> TOTPDevice:
    """Activate an enrolled device with a correct code; it replaces the actor's earlier devices."""
    if not isinstance(actor, User):
        raise NotPermitted("Only a signed-in person can confirm a second factor.")
    _ensure_self(actor, device.user)
    with transaction.atomic():
        locked = TOTPDevice.objects.select_for_update().filter(pk=device.pk, user=actor).first()
        if locked is None or locked.confirmed:
            raise InvalidState("There is no enrolment waiting for a code. Start again.")
        accepted, wait = _check_code(locked, code)
        replaced: list[int] = []
        if accepted:
            replaced = list(confirmed_devices(actor).exclude(pk=locked.pk).values_list("pk", flat=True))
            TOTPDevice.objects.filter(pk__in=replaced).delete()
            locked.confirmed = True
            locked.save(update_fields=["confirmed"])
        audit.record(
            action=Action.MFA_CONFIRMED,
            actor=actor,
            target=actor,
            result=Result.SUCCESS if accepted else (Result.DENIED if wait else Result.FAILURE),
            parameters={
                "device_id": locked.pk,
                "kind": "totp",
                "replaced_device_ids": replaced,
                **({} if accepted else {"reason": "throttled" if wait else "wrong code"}),
            },
        )
    if not accepted:
        _refuse(wait)
    device.confirmed = True
    return locked


def mfa_device_verify(*, actor: Principal, code: str, required_for: str = "") -> TOTPDevice:
    """Check a code against the actor's confirmed device (a step-up); records ``step_up.completed``.

    ``required_for`` names what asked for the step-up (a path or action), for the audit trail.
    """
    if not isinstance(actor, User):
        raise NotPermitted("Only a signed-in person can verify a second factor.")
    _ensure_self(actor, actor)
    with transaction.atomic():
        device = confirmed_devices(actor).select_for_update().first()
        if device is None:
            raise InvalidState("You have no second factor yet. Set up an authenticator app first.")
        accepted, wait = _check_code(device, code)
        audit.record(
            action=Action.STEP_UP_COMPLETED,
            actor=actor,
            target=actor,
            result=Result.SUCCESS if accepted else (Result.DENIED if wait else Result.FAILURE),
            parameters={
                "device_id": device.pk,
                "acr": ACR_MFA,
                "required_for": required_for[:200],
                **({} if accepted else {"reason": "throttled" if wait else "wrong code"}),
            },
        )
    if not accepted:
        _refuse(wait)
    return device


def mfa_device_remove(*, actor: Principal, device: TOTPDevice, reason: str = "") -> None:
    """Remove a second factor: by its owner (after a fresh second factor), or by an organization admin
    resetting a lost one.  Sessions it verified drop back to the password level at once."""
    owner = device.user
    if not (isinstance(actor, User) and actor.pk == owner.pk and actor.is_active):
        ensure_can_manage(actor, owner.organization)
    with transaction.atomic():
        locked = TOTPDevice.objects.select_for_update().filter(pk=device.pk).first()
        if locked is None:
            raise InvalidState("That second factor was already removed.")
        device_id, was_confirmed = locked.pk, locked.confirmed
        locked.delete()
        audit.record(
            action=Action.MFA_REMOVED,
            actor=actor,
            target=owner,
            on_behalf_of=owner,
            parameters={
                "device_id": device_id,
                "kind": "totp",
                "was_confirmed": was_confirmed,
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
