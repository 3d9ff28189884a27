"""Step-up: authentication levels, TOTP enrolment and verification, the require_step_up guard, RFC 9470.

Codes are real TOTP values computed from the device's key with django_otp.oath (nothing is mocked).
"""

from __future__ import annotations

import json
import logging
import time
from base64 import b32encode
from urllib.parse import quote

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import include, path
from django_otp.plugins.otp_totp.models import TOTPDevice

from approvals.models import ActionRequest
from audit.actions import Action, Result
from audit.models import AuditEvent
from governance import auth_levels
from governance.auth_levels import ACR_MFA, ACR_PASSWORD, Requirement
from governance.errors import NotPermitted
from governance.mfa.guards import StepUpRequiredMixin, ensure_fresh_for_grant, prompt_for, require_step_up
from governance.models import Grant
from governance.models.agents import AgentStatus
from governance.services.mfa import CodeRefused, mfa_device_remove, mfa_device_verify
from tests.factories import AdminFactory, CapabilityFactory, UserFactory
from tests.governance.step_up_helpers import code_for, pass_step_up, wrong_code_for

PASSWORD = "correct horse battery staple"


# A sensitive page behind the guard, served beside the real portal URLs for these tests.
@require_step_up
def sensitive(request):
    return HttpResponse("sensitive done")


@require_step_up(max_age=60)
def sensitive_recent(request):
    return HttpResponse("recent done")


class _Base:
    def dispatch(self, request, *args, **kwargs):
        return HttpResponse("mixin done")


class MixinView(StepUpRequiredMixin, _Base):
    pass


def mixin_view(request):
    return MixinView().dispatch(request)


def authorize_like(request):
    """What the authorization endpoint does with acr_values / max_age."""
    requirement = auth_levels.from_request(request.GET.get("acr_values"), request.GET.get("max_age"))
    return prompt_for(request, requirement) or HttpResponse(auth_levels.current_acr(request))


urlpatterns = [
    path("sensitive/", sensitive),
    path("sensitive-recent/", sensitive_recent),
    path("sensitive-mixin/", mixin_view),
    path("authorize/", authorize_like),
    path("", include("config.urls")),
]
pytestmark = pytest.mark.urls(__name__)


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_backoff(settings):
    """Throttling has its own tests; elsewhere a wrong code must not delay the next one."""
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


@pytest.fixture
def user(org):
    return UserFactory(organization=org, username="robin")


@pytest.fixture
def device(user):
    return TOTPDevice.objects.create(user=user, name="Phone", confirmed=True)


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)  # still django.contrib.auth.login: the user_logged_in signal runs
    return client


def session_level(client) -> tuple[str | None, int | None]:
    session = client.session
    return session.get(auth_levels.SESSION_ACR), session.get(auth_levels.SESSION_AUTH_TIME)


def set_auth_time(client, value: int) -> None:
    session = client.session
    session[auth_levels.SESSION_AUTH_TIME] = value
    session.save()


def request_for(client, user):
    """A request carrying the client's session, for calling auth_levels directly."""
    request = RequestFactory().get("/")
    request.user = user
    request.session = client.session
    return request


def verify(client, device, next_url="/portal/mfa/"):
    return client.post(f"/portal/mfa/verify/?next={next_url}", {"code": code_for(device), "next": next_url})


def events(action: Action):
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


# --- levels -----------------------------------------------------------------------------------------


def test_password_login_records_password_level_and_auth_time(client, user):
    before = int(time.time())
    assert client.login(username=user.username, password=PASSWORD)
    acr, when = session_level(client)
    assert acr == ACR_PASSWORD
    assert before <= when <= int(time.time())
    request = request_for(client, user)
    assert auth_levels.current_acr(request) == ACR_PASSWORD
    assert auth_levels.session_claims(request) == {"acr": ACR_PASSWORD, "auth_time": when, "amr": ["pwd"]}


def test_verification_raises_acr_with_fresh_auth_time(signed_in, user, device):
    set_auth_time(signed_in, int(time.time()) - 1000)
    page = signed_in.get("/portal/mfa/verify/?next=/portal/mfa/")
    assert page.status_code == 200
    before = int(time.time())
    old_key = signed_in.session.session_key
    response = verify(signed_in, device)
    assert response.status_code == 302 and response["Location"] == "/portal/mfa/"
    assert signed_in.session.session_key != old_key
    acr, when = session_level(signed_in)
    assert acr == ACR_MFA
    assert when >= before
    request = request_for(signed_in, user)
    assert auth_levels.satisfies(request, acr=ACR_MFA, max_age=300)
    assert auth_levels.session_claims(request)["amr"] == ["pwd", "otp", "mfa"]
    assert b"password and second factor" in signed_in.get("/portal/mfa/").content
    [event] = events(Action.STEP_UP_COMPLETED)
    assert event.result == Result.SUCCESS and event.actor_id == str(user.pk)
    assert json.loads(event.parameters)["acr"] == ACR_MFA


def test_satisfies_refuses_stale_auth_time(signed_in, user, device):
    verify(signed_in, device)
    set_auth_time(signed_in, int(time.time()) - 301)
    request = request_for(signed_in, user)
    assert auth_levels.current_acr(request) == ACR_MFA
    assert not auth_levels.satisfies(request, acr=ACR_MFA, max_age=300)
    assert not auth_levels.satisfies(request, acr=ACR_PASSWORD, max_age=300)
    assert auth_levels.satisfies(request, acr=ACR_MFA, max_age=None)
    assert auth_levels.satisfies(request, acr=ACR_MFA, max_age=400)


def test_satisfies_refuses_lower_and_unknown_acr(signed_in, user):
    request = request_for(signed_in, user)
    assert auth_levels.satisfies(request, acr=ACR_PASSWORD, max_age=300)
    assert not auth_levels.satisfies(request, acr=ACR_MFA, max_age=None)
    assert not auth_levels.satisfies(request, acr="urn:example:acr:gold", max_age=None)


def test_anonymous_and_other_users_session_have_no_level(signed_in, user, org):
    request = request_for(signed_in, UserFactory(organization=org))
    assert auth_levels.current_acr(request) is None
    assert not auth_levels.satisfies(request, acr=ACR_PASSWORD, max_age=None)
    request = RequestFactory().get("/")
    request.user, request.session = AnonymousUser(), signed_in.session
    assert auth_levels.current_acr(request) is None and auth_levels.auth_time(request) is None


def test_a_new_password_login_drops_the_second_factor(signed_in, user, device):
    verify(signed_in, device)
    assert session_level(signed_in)[0] == ACR_MFA
    assert signed_in.login(username=user.username, password=PASSWORD)  # the password form of sign-in
    assert session_level(signed_in)[0] == ACR_PASSWORD
    assert not auth_levels.satisfies(request_for(signed_in, user), acr=ACR_MFA, max_age=None)


def test_removing_the_device_drops_sessions_it_verified(signed_in, user, device):
    verify(signed_in, device)
    admin = UserFactory(organization=user.organization, role="admin")
    mfa_device_remove(actor=admin, device=device, reason="lost phone")
    assert auth_levels.current_acr(request_for(signed_in, user)) == ACR_PASSWORD
    response = signed_in.get("/sensitive/")
    assert response.status_code == 302 and response["Location"].startswith("/portal/mfa/enrol/")


# --- enrolment --------------------------------------------------------------------------------------


def test_enrolment_end_to_end(signed_in, user, caplog):
    caplog.set_level(logging.DEBUG)
    assert signed_in.get("/portal/mfa/").status_code == 200
    start = signed_in.get("/portal/mfa/enrol/?next=/portal/")
    assert start.status_code == 200 and b"Set up an authenticator app" in start.content
    response = signed_in.post("/portal/mfa/enrol/?next=/portal/")
    assert response.status_code == 302 and response["Location"].startswith("/portal/mfa/enrol/confirm/")
    device = TOTPDevice.objects.get(user=user)
    assert not device.confirmed

    page = signed_in.get(response["Location"])
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    html = page.content.decode()
    assert "<svg" in html and "</svg>" in html
    key = b32encode(device.bin_key).decode().rstrip("=")
    shown = html.split('id="manual-key">')[1].split("<")[0]
    assert shown.replace(" ", "") == key

    wrong = wrong_code_for(device)
    refused = signed_in.post(page.request["PATH_INFO"], {"code": wrong, "next": "/portal/"})
    assert refused.status_code == 400 and b"not correct" in refused.content
    device.refresh_from_db()
    assert not device.confirmed
    assert session_level(signed_in)[0] == ACR_PASSWORD

    right = code_for(device)
    done = signed_in.post(page.request["PATH_INFO"], {"code": right, "next": "/portal/"})
    assert done.status_code == 302 and done["Location"] == "/portal/"
    device.refresh_from_db()
    assert device.confirmed
    assert session_level(signed_in)[0] == ACR_MFA
    assert signed_in.get("/portal/mfa/enrol/confirm/")["Location"].startswith("/portal/mfa/enrol/")

    assert [e.result for e in events(Action.MFA_ENROLLED)] == [Result.SUCCESS]
    assert [e.result for e in events(Action.MFA_CONFIRMED)] == [Result.FAILURE, Result.SUCCESS]
    rows = AuditEvent.objects.values_list("parameters", "actor_label", "target_label", "on_behalf_of_label")
    text = json.dumps(list(rows))
    for secret in (wrong, right, device.key, key):
        assert secret not in text
    for secret in (wrong, right, key):
        assert secret not in caplog.text


def test_unfinished_enrolment_is_replaced_and_never_counts(signed_in, user):
    signed_in.post("/portal/mfa/enrol/")
    first = TOTPDevice.objects.get(user=user)
    signed_in.post("/portal/mfa/enrol/")
    second = TOTPDevice.objects.get(user=user)
    assert first.pk != second.pk and not second.confirmed
    # An unconfirmed device cannot verify a step-up.
    with pytest.raises(Exception, match="no second factor"):
        mfa_device_verify(actor=user, code=code_for(second))


def test_replacing_a_device_needs_a_fresh_second_factor(signed_in, user, device):
    refused = signed_in.post("/portal/mfa/enrol/")
    assert refused.status_code == 403
    assert b"needs a fresh second factor" in refused.content
    assert list(TOTPDevice.objects.filter(user=user)) == [device]

    verify(signed_in, device)
    assert signed_in.post("/portal/mfa/enrol/").status_code == 302
    new = TOTPDevice.objects.get(user=user, confirmed=False)
    done = signed_in.post("/portal/mfa/enrol/confirm/", {"code": code_for(new)})
    assert done.status_code == 302
    assert list(TOTPDevice.objects.filter(user=user)) == [new]
    new.refresh_from_db()
    assert new.confirmed
    assert json.loads(events(Action.MFA_CONFIRMED)[-1].parameters)["replaced_device_ids"] == [device.pk]


def test_removing_a_device_needs_a_fresh_second_factor(signed_in, user, device):
    url = f"/portal/mfa/devices/{device.pk}/remove/"
    refused = signed_in.post(url)
    assert refused.status_code == 403
    assert TOTPDevice.objects.filter(pk=device.pk).exists()
    assert events(Action.MFA_REMOVED) == []

    verify(signed_in, device)
    assert signed_in.post(url).status_code == 302
    assert not TOTPDevice.objects.filter(pk=device.pk).exists()
    [event] = events(Action.MFA_REMOVED)
    assert event.actor_id == str(user.pk) and json.loads(event.parameters)["device_id"] == device.pk


def test_another_users_device_cannot_be_removed(signed_in, user, device, org):
    other_device = TOTPDevice.objects.create(user=UserFactory(organization=org), name="x", confirmed=True)
    verify(signed_in, device)
    assert signed_in.post(f"/portal/mfa/devices/{other_device.pk}/remove/").status_code == 404
    assert TOTPDevice.objects.filter(pk=other_device.pk).exists()
    with pytest.raises(NotPermitted):
        mfa_device_remove(actor=user, device=other_device)


def test_verify_ignores_an_offsite_next(signed_in, device):
    response = signed_in.post(
        "/portal/mfa/verify/", {"code": code_for(device), "next": "https://evil.example/"}
    )
    assert response.status_code == 302 and response["Location"] == "/portal/mfa/"


def test_verify_without_a_device_sends_to_enrolment(signed_in):
    response = signed_in.get("/portal/mfa/verify/?next=/portal/")
    assert response.status_code == 302 and response["Location"] == "/portal/mfa/enrol/?next=%2Fportal%2F"


# --- throttling -------------------------------------------------------------------------------------


def test_wrong_codes_are_throttled(signed_in, user, device, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 3600
    wrong = signed_in.post("/portal/mfa/verify/", {"code": wrong_code_for(device)})
    assert wrong.status_code == 400
    # Even the right code is refused during the back-off, and the session stays at the password level.
    throttled = signed_in.post("/portal/mfa/verify/", {"code": code_for(device)})
    assert throttled.status_code == 429 and b"Too many wrong codes" in throttled.content
    assert session_level(signed_in)[0] == ACR_PASSWORD
    device.refresh_from_db()
    assert device.throttling_failure_count == 1
    assert [e.result for e in events(Action.STEP_UP_COMPLETED)] == [Result.FAILURE, Result.DENIED]


def test_malformed_codes_count_as_wrong(user, device):
    for bad in ("", "abcdef", "1234567890"):
        with pytest.raises(CodeRefused):
            mfa_device_verify(actor=user, code=bad)
    device.refresh_from_db()
    assert device.throttling_failure_count == 3


def test_a_code_cannot_be_used_twice(user, device):
    code = code_for(device)
    mfa_device_verify(actor=user, code=code)
    with pytest.raises(CodeRefused):
        mfa_device_verify(actor=user, code=code)


# --- the guard --------------------------------------------------------------------------------------


def test_guard_redirects_a_get_to_verification_and_back(signed_in, user, device):
    response = signed_in.get("/sensitive/?x=1")
    assert response.status_code == 302
    assert response["Location"] == "/portal/mfa/verify/?next=%2Fsensitive%2F%3Fx%3D1"
    [event] = events(Action.STEP_UP_REQUIRED)
    assert event.result == Result.DENIED
    assert json.loads(event.parameters)["required_for"] == "/sensitive/"

    done = signed_in.post(response["Location"], {"code": code_for(device), "next": "/sensitive/?x=1"})
    assert done["Location"] == "/sensitive/?x=1"
    assert signed_in.get("/sensitive/?x=1").content == b"sensitive done"
    assert signed_in.get("/sensitive-mixin/").content == b"mixin done"


def test_guard_refuses_a_post_with_a_sentence(signed_in, device):
    response = signed_in.post("/sensitive/")
    assert response.status_code == 403
    assert b"This action needs a fresh second factor." in response.content
    assert b"/portal/mfa/verify/" in response.content


def test_guard_sends_people_without_a_device_to_enrolment(signed_in):
    response = signed_in.get("/sensitive/")
    assert response.status_code == 302 and response["Location"].startswith("/portal/mfa/enrol/?next=")
    refused = signed_in.post("/sensitive/")
    assert refused.status_code == 403 and b"Set up an authenticator app" in refused.content
    assert signed_in.get("/sensitive-mixin/").status_code == 302


def test_guard_refuses_a_stale_second_factor(signed_in, device):
    verify(signed_in, device)
    assert signed_in.get("/sensitive/").status_code == 200
    set_auth_time(signed_in, int(time.time()) - 120)
    assert signed_in.get("/sensitive/").status_code == 200  # default window: 300 s
    assert signed_in.get("/sensitive-recent/").status_code == 302  # this page wants 60 s
    set_auth_time(signed_in, int(time.time()) - 301)
    assert signed_in.get("/sensitive/").status_code == 302
    assert signed_in.post("/sensitive/").status_code == 403


def test_guard_sends_anonymous_people_to_sign_in(client):
    response = client.get("/sensitive/")
    assert response.status_code == 302 and response["Location"].startswith("/portal/login/?next=")


def test_authorization_request_acr_values_reprompts(signed_in, device):
    url = f"/authorize/?acr_values={ACR_MFA}&max_age=60"
    response = signed_in.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/portal/mfa/verify/?next=")
    assert json.loads(events(Action.STEP_UP_REQUIRED)[0].parameters)["max_age"] == 60
    done = signed_in.post(response["Location"], {"code": code_for(device), "next": url})
    assert done["Location"] == url
    assert signed_in.get(url).content == ACR_MFA.encode()
    set_auth_time(signed_in, int(time.time()) - 61)
    assert signed_in.get(url).status_code == 302
    assert signed_in.get(f"/authorize/?acr_values={ACR_MFA}").status_code == 200


def test_authorization_request_without_a_device(signed_in):
    assert signed_in.get("/authorize/").status_code == 200
    assert signed_in.get(f"/authorize/?acr_values={ACR_MFA}")["Location"].startswith("/portal/mfa/enrol/")
    set_auth_time(signed_in, int(time.time()) - 100)
    # A stale password-only sign-in is renewed by signing in again.
    assert signed_in.get("/authorize/?max_age=30")["Location"].startswith("/portal/login/?next=")


# --- requirements and RFC 9470 ----------------------------------------------------------------------


@pytest.mark.django_db
def test_required_for_capabilities(settings):
    plain = CapabilityFactory(requires_step_up=False)
    marked = CapabilityFactory(requires_step_up=True, risk_level="high")
    assert auth_levels.required_for([plain]) == Requirement(ACR_PASSWORD, None)
    assert auth_levels.required_for([]) == (ACR_PASSWORD, None)
    assert auth_levels.required_for([plain, marked]) == (ACR_MFA, 300)
    settings.GATEHOUSE_STEP_UP_MAX_AGE_SECONDS = 90
    assert auth_levels.required_for([marked]) == (ACR_MFA, 90)


def test_requirements_from_an_authorization_request_and_combined():
    assert auth_levels.from_request(f"urn:x {ACR_MFA} {ACR_PASSWORD}", "60") == (ACR_MFA, 60)
    assert auth_levels.from_request("urn:unknown", None) == (ACR_PASSWORD, None)
    assert auth_levels.from_request(None, 0) == (ACR_PASSWORD, 0)
    for bad in ("-1", "1.5", "soon", "٣"):
        with pytest.raises(ValueError):
            auth_levels.from_request(None, bad)
    assert auth_levels.strongest(Requirement(ACR_PASSWORD, 600), Requirement(ACR_MFA, None)) == (ACR_MFA, 600)


def test_meets_for_token_claims():
    now = int(time.time())
    assert auth_levels.meets(acr=ACR_MFA, auth_time=now - 10, required_acr=ACR_MFA, max_age=60)
    assert not auth_levels.meets(acr=ACR_MFA, auth_time=now - 61, required_acr=ACR_MFA, max_age=60)
    assert not auth_levels.meets(acr=ACR_PASSWORD, auth_time=now, required_acr=ACR_MFA, max_age=60)
    assert not auth_levels.meets(acr=ACR_MFA, auth_time=None, required_acr=ACR_MFA, max_age=60)
    assert not auth_levels.meets(acr=ACR_MFA, auth_time=now + 3600, required_acr=ACR_MFA, max_age=60)


def test_insufficient_user_authentication_challenge():
    status, header = auth_levels.insufficient_user_authentication(ACR_MFA, 300)
    assert status == 401
    assert header == (
        'Bearer error="insufficient_user_authentication", '
        'error_description="A different authentication level is required", '
        f'acr_values="{ACR_MFA}", max_age="300"'
    )
    status, header = auth_levels.insufficient_user_authentication(None, 5, scheme="DPoP")
    assert header == (
        'DPoP error="insufficient_user_authentication", '
        'error_description="A more recent authentication is required", max_age="5"'
    )
    _, header = auth_levels.insufficient_user_authentication([ACR_MFA, ACR_PASSWORD], None)
    assert f'acr_values="{ACR_MFA} {ACR_PASSWORD}"' in header and "max_age" not in header


# --- the admin's sensitive actions ------------------------------------------------------------------


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def test_suspending_an_agent_in_the_admin_needs_a_fresh_second_factor(admin_client, admin, agent):
    changelist = "/admin/governance/agent/"
    chosen = {"action": "suspend_selected", ACTION_CHECKBOX_NAME: [agent.pk]}
    TOTPDevice.objects.create(user=admin, name="Phone", confirmed=True)

    for data in (chosen, {**chosen, "post": "yes", "reason": "leaked key"}):
        refused = admin_client.post(changelist, data)
        assert refused.status_code == 302
        assert refused["Location"] == f"/portal/mfa/verify/?next={quote(changelist, safe='')}"
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE
    assert events(Action.AGENT_SUSPENDED) == []
    demanded = events(Action.STEP_UP_REQUIRED)
    assert len(demanded) == 2 and demanded[0].actor_id == str(admin.pk)
    assert json.loads(demanded[0].parameters)["required_for"] == "admin: Suspending agents"

    pass_step_up(admin_client, admin)
    assert admin_client.post(changelist, chosen).status_code == 200  # the reason page
    done = admin_client.post(changelist, {**chosen, "post": "yes", "reason": "leaked key"})
    assert done.status_code == 302 and done["Location"] == changelist
    agent.refresh_from_db()
    assert agent.status == AgentStatus.SUSPENDED


def test_an_admin_without_a_device_is_sent_to_enrolment(admin_client, agent):
    refused = admin_client.post(
        "/admin/governance/agent/", {"action": "suspend_selected", ACTION_CHECKBOX_NAME: [agent.pk]}
    )
    assert refused["Location"].startswith("/portal/mfa/enrol/?next=")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_an_admin_of_another_organization_is_not_asked_for_anything(client, other_org, agent):
    outsider = AdminFactory(organization=other_org, username="outsider")
    client.force_login(outsider)
    client.post(
        "/admin/governance/agent/",
        {"action": "suspend_selected", ACTION_CHECKBOX_NAME: [agent.pk], "post": "yes", "reason": "x"},
    )
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE
    assert not AuditEvent.objects.filter(actor_id=str(outsider.pk)).exists()


def grant_post(agent, user, capability) -> dict:
    return {"agent": agent.pk, "user": user.pk, "capability": capability.pk, "reason": "front desk"}


@pytest.mark.parametrize("risk", ["high", "critical"])
def test_granting_a_high_risk_capability_in_the_admin_needs_a_fresh_second_factor(
    admin_client, admin, agent, member, tool_server, risk
):
    risky = CapabilityFactory(tool_server=tool_server, key="records.erase", risk_level=risk)
    agent.ceiling.add(risky)
    TOTPDevice.objects.create(user=admin, name="Phone", confirmed=True)
    add = "/admin/governance/grant/add/"

    refused = admin_client.post(add, grant_post(agent, member, risky))
    assert refused.status_code == 302 and refused["Location"].startswith("/portal/mfa/verify/?next=")
    assert not Grant.objects.filter(capability=risky).exists()
    assert "records.erase" in json.loads(events(Action.STEP_UP_REQUIRED)[0].parameters)["required_for"]

    pass_step_up(admin_client, admin)
    AdminFactory(organization=admin.organization, username="second-admin")
    done = admin_client.post(add, grant_post(agent, member, risky))
    assert done.status_code == 302, done.context and done.context["adminform"].form.errors
    # Past the step-up, a high-risk grant waits for a second admin (docs/approvals.md).
    assert ActionRequest.objects.filter(kind="grant", capability=risky, on_behalf_of=member).exists()


def test_granting_a_low_risk_capability_needs_no_second_factor(admin_client, agent, member, capability):
    done = admin_client.post("/admin/governance/grant/add/", grant_post(agent, member, capability))
    assert done.status_code == 302
    assert Grant.objects.filter(capability=capability, user=member).exists()
    assert events(Action.STEP_UP_REQUIRED) == []


def test_the_grant_backstop_refuses_without_a_fresh_second_factor(admin, tool_server):
    risky = CapabilityFactory(tool_server=tool_server, key="records.erase", risk_level="high")
    request = RequestFactory().post("/")
    request.user, request.session = admin, {}
    with pytest.raises(NotPermitted, match="needs a fresh second factor"):
        ensure_fresh_for_grant(request, risky)
    ensure_fresh_for_grant(request, CapabilityFactory(tool_server=tool_server, risk_level="medium"))
