"""Authentication levels of a portal session: which `acr` it reached and when (`auth_time`).

Two levels, as Authentication Context Class Reference values (OpenID Connect Core §2, RFC 9470 §6):

=========================  =====================================================  ==========
ACR value                  meaning                                                amr
=========================  =====================================================  ==========
``urn:gatehouse:acr:pwd``  the person signed in with a password                   ``pwd``
``urn:gatehouse:acr:mfa``  ... and then proved a confirmed TOTP second factor     ``pwd otp``
=========================  =====================================================  ==========

The higher level satisfies the lower.  A login (any ``django.contrib.auth.login``) sets the password level
and a fresh ``auth_time``; a verified second factor raises the session to the MFA level with a new
``auth_time`` (the time of the latest active authentication).  Both live in the server-side session.

The authorization endpoint and the token broker read :func:`current_acr` / :func:`auth_time` (or
:func:`session_claims`) to put ``acr`` and ``auth_time`` into tokens, and :func:`required_for` to learn what
a set of capabilities demands.  Resource servers answer a token that falls short with
:func:`insufficient_user_authentication` (RFC 9470 §3).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest

from governance.conf import gatehouse_settings
from governance.models.capabilities import RiskLevel

ACR_PASSWORD = "urn:gatehouse:acr:pwd"
ACR_MFA = "urn:gatehouse:acr:mfa"

# Weakest first; a level satisfies every level at or below its position.
LEVELS: tuple[str, ...] = (ACR_PASSWORD, ACR_MFA)
# RFC 8176 authentication method references for each level.
AMR: dict[str, list[str]] = {ACR_PASSWORD: ["pwd"], ACR_MFA: ["pwd", "otp", "mfa"]}

SESSION_ACR = "gatehouse_acr"
SESSION_AUTH_TIME = "gatehouse_auth_time"
SESSION_USER = "gatehouse_acr_user"

# Sessions written by another web process with a slightly different clock must not look stale or future.
CLOCK_SKEW_SECONDS = 5


class Requirement(NamedTuple):
    """What an action demands: at least ``acr``, authenticated at most ``max_age`` seconds ago (None: any)."""

    acr: str
    max_age: int | None


def step_up_max_age() -> int:
    return int(gatehouse_settings.STEP_UP_MAX_AGE_SECONDS)


def rank(acr: str | None) -> int:
    """Position of a level; -1 for none or an unknown value (which satisfies nothing)."""
    try:
        return LEVELS.index(acr) if acr else -1
    except ValueError:
        return -1


def is_known(acr: str) -> bool:
    return acr in LEVELS


def now() -> int:
    return int(time.time())


# --- recording ------------------------------------------------------------------------------------


def _record(request: HttpRequest, user: Any, acr: str) -> None:
    request.session[SESSION_ACR] = acr
    request.session[SESSION_AUTH_TIME] = now()
    request.session[SESSION_USER] = str(user.pk)


def record_password_login(request: HttpRequest, user: Any = None) -> None:
    """The person just signed in with a password: password level, fresh auth_time, no second factor."""
    from django_otp import DEVICE_ID_SESSION_KEY

    # A new sign-in starts over: a second factor proved earlier in this session no longer counts.
    request.session.pop(DEVICE_ID_SESSION_KEY, None)
    _record(request, user if user is not None else request.user, ACR_PASSWORD)


def record_second_factor(request: HttpRequest, device: Any) -> None:
    """The person just proved ``device`` (already verified by a service): MFA level, fresh auth_time."""
    import django_otp

    if device.user_id != request.user.pk or not device.confirmed:
        raise ValueError("only the signed-in user's confirmed device can raise the session")
    django_otp.login(request, device)
    _record(request, request.user, ACR_MFA)
    # A raised privilege gets a new session key, as a sign-in does (the old key stops working).
    request.session.cycle_key()


@receiver(user_logged_in, dispatch_uid="gatehouse.auth_levels.password_login")
def _on_login(sender, request: HttpRequest | None, user, **kwargs) -> None:
    if request is None or not hasattr(request, "session"):
        return
    record_password_login(request, user)
    # django-otp's own login forms verify a device during sign-in and leave it on the user.
    device = getattr(user, "otp_device", None)
    if device is not None and device.user_id == user.pk and device.confirmed and hasattr(request, "user"):
        record_second_factor(request, device)


# --- reading --------------------------------------------------------------------------------------


def _second_factor_present(request: HttpRequest) -> bool:
    """The session's device still exists, is confirmed and is the user's (OTPMiddleware checks this)."""
    user = request.user
    is_verified = getattr(user, "is_verified", None)
    if callable(is_verified):
        return bool(is_verified())
    # Outside OTPMiddleware (a hand-built request): look the device up ourselves.
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.models import Device

    persistent_id = request.session.get(DEVICE_ID_SESSION_KEY)
    device = Device.from_persistent_id(persistent_id) if persistent_id else None
    return device is not None and device.user_id == user.pk and device.confirmed


def current_acr(request: HttpRequest) -> str | None:
    """The session's level, or None when nobody is signed in or no level was recorded.

    The MFA level drops back to the password level as soon as the device that proved it is removed.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not hasattr(request, "session"):
        return None
    acr = request.session.get(SESSION_ACR)
    if acr not in LEVELS or request.session.get(SESSION_USER) != str(user.pk):
        return None
    if acr == ACR_MFA and not _second_factor_present(request):
        return ACR_PASSWORD
    return acr


def auth_time(request: HttpRequest) -> int | None:
    """Epoch seconds of the latest active authentication in this session, or None."""
    if current_acr(request) is None:
        return None
    value = request.session.get(SESSION_AUTH_TIME)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def auth_datetime(request: HttpRequest) -> datetime | None:
    """:func:`auth_time` as an aware UTC datetime."""
    when = auth_time(request)
    return None if when is None else datetime.fromtimestamp(when, tz=UTC)


def session_claims(request: HttpRequest) -> dict[str, Any]:
    """``acr``, ``auth_time`` and ``amr`` for a token minted from this session (empty when unknown)."""
    acr, when = current_acr(request), auth_time(request)
    if acr is None or when is None:
        return {}
    return {"acr": acr, "auth_time": when, "amr": list(AMR[acr])}


def meets(
    *, acr: str | None, auth_time: int | None, required_acr: str, max_age: int | None, at: int | None = None
) -> bool:
    """Whether a level reached at ``auth_time`` satisfies a requirement (also for a token's claims)."""
    if rank(required_acr) < 0 or rank(acr) < rank(required_acr):
        return False
    if max_age is None:
        return True
    if auth_time is None or max_age < 0:
        return False
    age = (now() if at is None else at) - auth_time
    return -CLOCK_SKEW_SECONDS <= age <= max_age


def satisfies(request: HttpRequest, *, acr: str, max_age: int | None) -> bool:
    """The session is at ``acr`` or higher and, when ``max_age`` is given, authenticated that recently."""
    return meets(acr=current_acr(request), auth_time=auth_time(request), required_acr=acr, max_age=max_age)


# --- requirements ---------------------------------------------------------------------------------


def required_for(capabilities: Iterable[Any]) -> Requirement:
    """The level a set of capabilities needs: MFA within the step-up window if any is marked for step-up."""
    if any(getattr(capability, "requires_step_up", False) for capability in capabilities):
        return Requirement(ACR_MFA, step_up_max_age())
    return Requirement(ACR_PASSWORD, None)


# Granting a capability of these risk levels is itself a sensitive portal action (fresh second factor).
STEP_UP_GRANT_RISK_LEVELS = RiskLevel.high_risk()


def granting_needs_step_up(capability: Any) -> bool:
    return getattr(capability, "risk_level", None) in STEP_UP_GRANT_RISK_LEVELS


# Taking an agent out of service (every token it holds revoked: the kill switch, and retirement, which is also
# permanent) is a sensitive portal action: the person doing it proves a fresh second factor.
STEP_UP_AGENT_STATUSES = frozenset({"suspended", "retired"})


def agent_transition_needs_step_up(to_status: str) -> bool:
    """Whether moving an agent to ``to_status`` needs a fresh second factor (one rule, every way in)."""
    return to_status in STEP_UP_AGENT_STATUSES


def strongest(*requirements: Requirement) -> Requirement:
    """Combine requirements: the highest level and the shortest max_age."""
    acr = max((r.acr for r in requirements), key=rank, default=ACR_PASSWORD)
    ages = [r.max_age for r in requirements if r.max_age is not None]
    return Requirement(acr, min(ages) if ages else None)


def from_request(acr_values: str | None, max_age: str | int | None) -> Requirement:
    """A client's ``acr_values`` / ``max_age`` (authorization request, RFC 9470 §4) as a requirement.

    ``acr_values`` is a space-separated list in order of preference: the first value we know is the level to
    reach (a stronger one also does).  Unknown values are ignored; none known means no demand on the level.
    A ``max_age`` that is not a non-negative integer raises ValueError (answer ``invalid_request``).
    """
    known = [value for value in (acr_values or "").split() if is_known(value)]
    acr = known[0] if known else ACR_PASSWORD
    if max_age is None or max_age == "":
        return Requirement(acr, None)
    if isinstance(max_age, str):
        if not max_age.isascii() or not max_age.isdigit():
            raise ValueError("max_age must be a non-negative integer")
        max_age = int(max_age)
    if isinstance(max_age, bool) or max_age < 0:
        raise ValueError("max_age must be a non-negative integer")
    return Requirement(acr, max_age)


# --- RFC 9470 challenge ---------------------------------------------------------------------------


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def insufficient_user_authentication(
    acr_values: str | Iterable[str] | None,
    max_age: int | None,
    *,
    scheme: str = "Bearer",
    description: str | None = None,
) -> tuple[int, str]:
    """(401, WWW-Authenticate value) telling a client to come back with a stronger or fresher login.

    RFC 9470 §3: ``error="insufficient_user_authentication"`` with ``acr_values`` (space-separated, in order
    of preference) and/or ``max_age`` (seconds).  ``scheme`` is ``Bearer`` or ``DPoP`` (RFC 9449 §7.1).
    """
    if isinstance(acr_values, str):
        acr_values = acr_values.split()
    values = [v for v in (acr_values or []) if v]
    if description is None:
        description = (
            "A more recent authentication is required"
            if not values
            else "A different authentication level is required"
        )
    params = [
        f"error={_quoted('insufficient_user_authentication')}",
        f"error_description={_quoted(description)}",
    ]
    if values:
        params.append(f"acr_values={_quoted(' '.join(values))}")
    if max_age is not None:
        params.append(f"max_age={_quoted(str(int(max_age)))}")
    return 401, f"{scheme} " + ", ".join(params)
