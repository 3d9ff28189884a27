"""Second-factor enrolment cannot be taken over or bootstrapped from a password alone (issue 9: 3, 4).

Two browsers are two Django test clients: each has its own session, as an attacker's would.  Codes are
real TOTP values computed from the device's key.
"""

from __future__ import annotations

import json
import time

import pytest
from django.core import mail
from django.test import Client
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.actions import Action, Result
from audit.models import AuditEvent
from config.celery import app as celery_app
from governance import auth_levels
from governance.errors import NotPermitted
from governance.services.mfa import mfa_device_confirm, mfa_device_enrol, mfa_device_remove
from tests.factories import UserFactory
from tests.governance.step_up_helpers import code_for, pass_step_up

PASSWORD = "correct horse battery staple"
CONFIRM = "/portal/mfa/enrol/confirm/"


@pytest.fixture(autouse=True)
def no_backoff(settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    settings.OTP_STATIC_THROTTLE_FACTOR = 0


@pytest.fixture
def user(org):
    return UserFactory(organization=org, username="robin", email="robin@example.test")


@pytest.fixture
def device(user):
    return TOTPDevice.objects.create(user=user, name="Phone", confirmed=True)


def browser(user) -> Client:
    client = Client()
    client.force_login(user)  # a password sign-in: the password level, nothing more
    return client


def events(action: Action):
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def stale(client) -> None:
    session = client.session
    session[auth_levels.SESSION_AUTH_TIME] = int(time.time()) - 10_000
    session.save()


# --- defect 3: a pending enrolment belongs to the session (and the fresh factor) that started it -------


def test_another_session_cannot_see_or_confirm_a_pending_replacement(user, device):
    owner = browser(user)
    pass_step_up(owner, user)
    assert owner.post("/portal/mfa/enrol/").status_code == 302
    pending = TOTPDevice.objects.get(user=user, confirmed=False)  # started, then abandoned

    thief = browser(user)  # the same user's password, another session, no second factor
    page = thief.get(CONFIRM)
    assert page.status_code == 302 and page["Location"].startswith("/portal/mfa/enrol/")
    assert pending.key not in page.content.decode()
    taken = thief.post(CONFIRM, {"code": code_for(pending)})
    assert taken.status_code in (302, 403)
    assert list(TOTPDevice.objects.filter(user=user, confirmed=True)) == [device]
    assert not TOTPDevice.objects.get(pk=pending.pk).confirmed
    assert events(Action.MFA_CONFIRMED) == []
    assert b"finish it" not in thief.get("/portal/mfa/").content


def test_a_replacement_needs_the_current_factor_still_fresh_when_confirmed(user, device):
    owner = browser(user)
    pass_step_up(owner, user)
    owner.post("/portal/mfa/enrol/")
    pending = TOTPDevice.objects.get(user=user, confirmed=False)
    stale(owner)  # the fresh factor that started the replacement has lapsed
    refused = owner.post(CONFIRM, {"code": code_for(pending)})
    assert refused.status_code == 403
    assert list(TOTPDevice.objects.filter(user=user, confirmed=True)) == [device]

    pass_step_up(owner, user)
    done = owner.post(CONFIRM, {"code": code_for(pending)})
    assert done.status_code == 302
    assert list(TOTPDevice.objects.filter(user=user, confirmed=True)) == [pending]


def test_the_service_refuses_a_replacement_without_the_current_device(user, device):
    pending = mfa_device_enrol(actor=user)
    with pytest.raises(NotPermitted):
        mfa_device_confirm(actor=user, device=pending, code=code_for(pending), proved_device=None)
    other = TOTPDevice.objects.create(
        user=UserFactory(organization=user.organization), name="x", confirmed=True
    )
    with pytest.raises(NotPermitted):
        mfa_device_confirm(actor=user, device=pending, code=code_for(pending), proved_device=other)
    assert TOTPDevice.objects.filter(pk=device.pk, confirmed=True).exists()


# --- defect 4: no step-up bootstrapped from a password alone ------------------------------------------


def test_enrolling_the_first_device_needs_the_password_again(user):
    session = browser(user)  # e.g. a stolen session cookie: no password in hand
    for data in ({}, {"password": "not the password"}):
        refused = session.post("/portal/mfa/enrol/", data)
        assert refused.status_code == 403
        assert b"Enter your password" in refused.content
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert [e.result for e in events(Action.SIGN_IN_FAILED)] == [Result.FAILURE]

    done = session.post("/portal/mfa/enrol/", {"password": PASSWORD})
    assert done.status_code == 302 and done["Location"].startswith(CONFIRM)
    assert [e.result for e in events(Action.MFA_ENROLLED)] == [Result.DENIED, Result.DENIED, Result.SUCCESS]
    assert all(json.loads(e.parameters)["first_device"] is True for e in events(Action.MFA_ENROLLED))


@pytest.fixture
def tasks_in_process():
    """The notice is a Celery task; with REDIS_URL it would go to a worker (tests/test_celery_worker.py runs
    one), here it runs in this process so the mail lands in Django's test outbox."""
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager


def test_a_new_second_factor_is_audited_and_notified_by_email(
    user, django_capture_on_commit_callbacks, tasks_in_process
):
    session = browser(user)
    session.post("/portal/mfa/enrol/", {"password": PASSWORD})
    pending = TOTPDevice.objects.get(user=user)
    with django_capture_on_commit_callbacks(execute=True):
        assert session.post(CONFIRM, {"code": code_for(pending)}).status_code == 302
    [confirmed] = [e for e in events(Action.MFA_CONFIRMED) if e.result == Result.SUCCESS]
    assert json.loads(confirmed.parameters)["first_device"] is True
    [message] = mail.outbox
    assert message.to == [user.email] and "second factor" in message.subject.lower()
    assert pending.key not in message.body and code_for(pending) not in message.body


@pytest.fixture
def admin_needs_mfa(settings):
    settings.GATEHOUSE_ADMIN_REQUIRES_MFA = True


def test_admins_need_a_second_factor_before_any_admin_page(admin_needs_mfa, admin, agent):
    session = browser(admin)
    page = session.get("/admin/governance/agent/")
    assert page.status_code == 302 and page["Location"].startswith("/portal/mfa/enrol/?next=")
    posted = session.post(
        "/admin/governance/agent/", {"action": "suspend_selected", "_selected_action": [agent.pk]}
    )
    assert posted.status_code == 403
    assert session.get("/admin/").status_code == 302
    TOTPDevice.objects.create(user=admin, name="Phone", confirmed=True)
    assert session.get("/admin/")["Location"].startswith("/portal/mfa/verify/?next=")
    assert session.get("/admin/login/").status_code in (200, 302)  # signing in is never blocked
    pass_step_up(session, admin)
    assert session.get("/admin/governance/agent/").status_code == 200
    stale(session)  # any age: the admin needs the level, the sensitive actions need it fresh
    assert session.get("/admin/governance/agent/").status_code == 200


def test_without_the_setting_admins_are_not_held_back(settings, admin):
    settings.GATEHOUSE_ADMIN_REQUIRES_MFA = False
    assert browser(admin).get("/admin/").status_code == 200


# --- recovery codes (django-otp's static device) -------------------------------------------------------


def generate_codes(session) -> list[str]:
    page = session.post("/portal/mfa/recovery/")
    assert page.status_code == 200, page.content
    assert "no-store" in page["Cache-Control"]
    return page.context["codes"]


def test_recovery_codes_need_a_fresh_second_factor_and_are_shown_once(user, device):
    session = browser(user)
    assert session.post("/portal/mfa/recovery/").status_code == 403
    pass_step_up(session, user)
    codes = generate_codes(session)
    assert len(codes) == 10 and len(set(codes)) == 10
    stored = list(StaticToken.objects.filter(device__user=user).values_list("token", flat=True))
    assert len(stored) == 10 and not set(codes) & set(stored)  # stored hashed, never as shown
    listing = session.get("/portal/mfa/recovery/").content.decode()
    assert "10 recovery codes left" in listing and not any(code in listing for code in codes)
    [event] = events(Action.MFA_RECOVERY_CODES_GENERATED)
    assert json.loads(event.parameters)["count"] == 10 and not any(c in event.parameters for c in codes)


def test_a_recovery_code_replaces_a_lost_phone_once(user, device):
    owner = browser(user)
    pass_step_up(owner, user)
    codes = generate_codes(owner)

    lost_phone = browser(user)  # a new session, the phone is gone
    used = lost_phone.post("/portal/mfa/verify/", {"code": codes[0], "next": "/portal/mfa/"})
    assert used.status_code == 302
    verified = [e for e in events(Action.STEP_UP_COMPLETED) if e.result == Result.SUCCESS][-1]
    assert json.loads(verified.parameters)["kind"] == "recovery_code"
    assert codes[0] not in verified.parameters
    # The recovery code is a second factor: it may replace the lost device.
    assert lost_phone.post("/portal/mfa/enrol/").status_code == 302
    new = TOTPDevice.objects.get(user=user, confirmed=False)
    assert lost_phone.post(CONFIRM, {"code": code_for(new)}).status_code == 302
    assert list(TOTPDevice.objects.filter(user=user, confirmed=True)) == [new]

    again = browser(user)
    assert again.post("/portal/mfa/verify/", {"code": codes[0], "next": "/"}).status_code == 400  # used once
    assert again.post("/portal/mfa/verify/", {"code": codes[1], "next": "/"}).status_code == 302


def test_regenerating_recovery_codes_voids_the_old_ones(user, device):
    session = browser(user)
    pass_step_up(session, user)
    old = generate_codes(session)
    new = generate_codes(session)
    assert not set(old) & set(new)
    other = browser(user)
    assert other.post("/portal/mfa/verify/", {"code": old[0], "next": "/"}).status_code == 400
    assert other.post("/portal/mfa/verify/", {"code": new[0], "next": "/"}).status_code == 302


def test_removing_the_last_app_voids_the_recovery_codes(user, device, admin):
    session = browser(user)
    pass_step_up(session, user)
    codes = generate_codes(session)
    mfa_device_remove(actor=admin, device=device, reason="lost phone and codes")
    assert not StaticToken.objects.filter(device__user=user).exists()
    [event] = events(Action.MFA_REMOVED)
    assert json.loads(event.parameters)["recovery_codes_voided"] == len(codes)
