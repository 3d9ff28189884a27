"""Portal pages for the second factor: overview, enrolment (QR code and manual key), verification, removal.

Thin: parse, call one service, record the session level, render.  Pages that show a device key are never
cached, and a key is only shown while its device is unconfirmed.
"""

from __future__ import annotations

from base64 import b32encode
from urllib.parse import urlencode

import segno
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance import auth_levels
from governance.errors import GovernanceError
from governance.mfa.guards import enrol_url, is_fresh, require_step_up, step_up_response
from governance.services.mfa import (
    TooManyAttempts,
    confirmed_devices,
    mfa_device_confirm,
    mfa_device_enrol,
    mfa_device_remove,
    mfa_device_verify,
    pending_device,
)


def _next(request: HttpRequest) -> str:
    """A same-site ``next`` (from the form or the query), or the overview page."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("governance:mfa")


def _error_status(exc: GovernanceError) -> int:
    return 429 if isinstance(exc, TooManyAttempts) else 400


def manual_key(device: TOTPDevice) -> str:
    """The key in base32, as authenticator apps accept it when typed, in groups of four."""
    key = b32encode(device.bin_key).decode("ascii").rstrip("=")
    return " ".join(key[i : i + 4] for i in range(0, len(key), 4))


def qr_svg(device: TOTPDevice) -> str:
    """An inline SVG QR code of the device's otpauth:// URL (dark on white, readable in dark mode too)."""
    code = segno.make(device.config_url, error="m")
    return mark_safe(  # noqa: S308 - segno's own markup; the only data is the URL it encoded
        code.svg_inline(
            scale=4,
            border=4,
            dark="#000",
            light="#fff",
            title="QR code to add Gatehouse to your authenticator app",
        )
    )


@never_cache
@login_required
def overview(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "governance/mfa/overview.html",
        {
            "devices": confirmed_devices(request.user),
            "pending": pending_device(request.user),
            "acr": auth_levels.current_acr(request),
            "fresh": is_fresh(request),
            "auth_time": auth_levels.auth_datetime(request),
        },
    )


@never_cache
@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def enrol(request: HttpRequest) -> HttpResponse:
    """GET: explain and offer to start.  POST: create a new unconfirmed device and go to confirmation.

    Replacing an existing device needs a fresh second factor first.
    """
    replacing = confirmed_devices(request.user).exists()
    if request.method == "POST":
        if replacing:
            refusal = step_up_response(request)
            if refusal is not None:
                return refusal
        mfa_device_enrol(actor=request.user)
        return redirect(f"{reverse('governance:mfa_confirm')}?{urlencode({'next': _next(request)})}")
    return render(request, "governance/mfa/enrol.html", {"replacing": replacing, "next": _next(request)})


@never_cache
@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def confirm(request: HttpRequest) -> HttpResponse:
    """Show the QR code and manual key of the device being enrolled; a correct code activates it."""
    device = pending_device(request.user)
    if device is None:
        return redirect(enrol_url(_next(request)))
    error, status = "", 200
    if request.method == "POST":
        try:
            device = mfa_device_confirm(actor=request.user, device=device, code=request.POST.get("code", ""))
        except GovernanceError as exc:
            error, status = exc.message, _error_status(exc)
        else:
            # Proving the new device is a second factor: the session reaches the MFA level now.
            auth_levels.record_second_factor(request, device)
            messages.success(request, "Your authenticator app is set up.")
            return redirect(_next(request))
    return render(
        request,
        "governance/mfa/confirm.html",
        {
            "qr_svg": qr_svg(device),
            "manual_key": manual_key(device),
            "digits": device.digits,
            "period": device.step,
            "error": error,
            "next": _next(request),
        },
        status=status,
    )


@never_cache
@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """Enter a code to raise the session to the MFA level with a fresh auth_time, then go to ``next``."""
    next_url = _next(request)
    if not confirmed_devices(request.user).exists():
        return redirect(enrol_url(next_url))
    error, status = "", 200
    if request.method == "POST":
        try:
            device = mfa_device_verify(
                actor=request.user, code=request.POST.get("code", ""), required_for=next_url
            )
        except GovernanceError as exc:
            error, status = exc.message, _error_status(exc)
        else:
            auth_levels.record_second_factor(request, device)
            return redirect(next_url)
    return render(request, "governance/mfa/verify.html", {"error": error, "next": next_url}, status=status)


@never_cache
@login_required
@require_POST
@require_step_up
def remove(request: HttpRequest, pk: int) -> HttpResponse:
    device = get_object_or_404(TOTPDevice, pk=pk, user=request.user)
    try:
        mfa_device_remove(actor=request.user, device=device, reason="removed by its owner")
    except GovernanceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "The authenticator app was removed. Set up another to keep using step-up.")
    return redirect("governance:mfa")
