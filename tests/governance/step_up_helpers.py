"""Helpers for tests that pass (or fail) a step-up with real TOTP codes, computed from the device's key."""

from __future__ import annotations

import time

from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice


def code_for(device: TOTPDevice) -> str:
    """The code the authenticator app shows now (the next step when this one was already used)."""
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    if totp.t() <= device.last_t:
        totp.drift = device.drift + (device.last_t - totp.t()) + 1
    return f"{totp.token():0{device.digits}d}"


def wrong_code_for(device: TOTPDevice) -> str:
    """A well-formed code that no step near now accepts."""
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    valid = set()
    for shift in range(-3, 4):
        totp.drift = device.drift + shift
        valid.add(f"{totp.token():0{device.digits}d}")
    return next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919)) if c not in valid)


def pass_step_up(client, user) -> TOTPDevice:
    """Give ``user`` a confirmed device (if none) and raise the client's session with a real code."""
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Test phone", confirmed=True)
    response = client.post("/portal/mfa/verify/", {"code": code_for(device), "next": "/portal/"})
    assert response.status_code == 302, "the second factor was refused"
    return device
