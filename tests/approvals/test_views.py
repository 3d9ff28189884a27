"""The emailed link, the confirmation page, the inbox and the development outbox, through Django's client."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from approvals.models import ActionRequest, ApprovalDecision, ApprovalNotification, RequestStatus
from approvals.outbox import notification_claim
from audit.actions import Action
from audit.models import AuditEvent
from tests.factories import OrganizationFactory, UserFactory
from tests.governance.step_up_helpers import pass_step_up

LINK = re.compile(r"http://[^\s\"<>]+/portal/approvals/link/([A-Za-z0-9_-]+)/")
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def asked(clinic, django_capture_on_commit_callbacks):
    """A request whose emails were sent; returns (request, {username: link path})."""
    with django_capture_on_commit_callbacks(execute=True):
        request = clinic.ask(authorization_details=clinic.details(note=HOSTILE), binding_message=HOSTILE)
    paths = {}
    for message in mail.outbox:
        username = message.to[0].split("@")[0]
        paths[username] = LINK.search(message.body).group(0).split("127.0.0.1:8000", 1)[-1]
    return request, paths


def signed_in(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def csrf_of(response) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode()).group(1)


# --- refusals -----------------------------------------------------------


def test_get_never_decides(clinic, asked):
    request, paths = asked
    page = signed_in(clinic.ravi).get(paths["ravi"], {"decision": "approve"})
    assert page.status_code == 200
    assert not ApprovalDecision.objects.exists()
    assert AuditEvent.objects.filter(action=Action.APPROVAL_LINK_OPENED).count() == 1


def test_a_link_needs_a_login_first(clinic, asked):
    _, paths = asked
    response = Client().get(paths["ravi"])
    assert response.status_code == 302 and response["Location"].startswith("/portal/login/")
    assert not AuditEvent.objects.filter(action=Action.APPROVAL_LINK_OPENED).exists()


def test_a_post_without_csrf_is_refused(clinic, asked):
    _, paths = asked
    client = signed_in(clinic.ravi, csrf=True)
    assert client.post(paths["ravi"], {"decision": "approve"}).status_code == 403
    page = client.get(paths["ravi"])
    assert (
        client.post(paths["ravi"], {"decision": "approve", "csrfmiddlewaretoken": csrf_of(page)}).status_code
        == 302
    )
    assert ApprovalDecision.objects.count() == 1


def test_a_tampered_link_is_refused(clinic, asked):
    _, paths = asked
    tampered = paths["ravi"][:-3] + ("A" if paths["ravi"][-3] != "A" else "B") + "/"
    client = signed_in(clinic.ravi)
    for path in (tampered, "/portal/approvals/link/%00%01/", "/portal/approvals/link/" + "a" * 500 + "/"):
        response = client.get(path)
        assert response.status_code == 404
        assert "does not work" in response.content.decode()
        assert client.post(path, {"decision": "approve"}).status_code == 404
    assert not ApprovalDecision.objects.exists()
    assert AuditEvent.objects.filter(action=Action.APPROVAL_LINK_REFUSED).count() == 6


def test_another_approvers_link_is_refused(clinic, asked):
    _, paths = asked
    client = signed_in(clinic.mei)
    assert client.get(paths["ravi"]).status_code == 404
    assert client.post(paths["ravi"], {"decision": "approve"}).status_code == 404
    assert not ApprovalDecision.objects.exists()


def test_a_used_link_is_refused(clinic, asked):
    _, paths = asked
    client = signed_in(clinic.ravi)
    assert client.post(paths["ravi"], {"decision": "approve"}).status_code == 302
    assert client.get(paths["ravi"]).status_code == 404
    assert client.post(paths["ravi"], {"decision": "deny"}).status_code == 404
    assert ApprovalDecision.objects.count() == 1


def test_an_expired_link_is_refused(clinic, asked, settings):
    request, paths = asked
    ApprovalNotification.objects.update(sent_at=timezone.now() - timedelta(days=2))
    assert signed_in(clinic.ravi).post(paths["ravi"], {"decision": "approve"}).status_code == 404
    ApprovalNotification.objects.update(sent_at=timezone.now())
    ActionRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert signed_in(clinic.mei).post(paths["mei"], {"decision": "approve"}).status_code == 404
    assert not ApprovalDecision.objects.exists()


def test_a_link_whose_claim_was_superseded_is_refused(clinic, asked):
    _, paths = asked
    row = ApprovalNotification.objects.get(recipient=clinic.ravi)
    ApprovalNotification.objects.filter(pk=row.pk).update(state="pending", next_attempt_at=timezone.now())
    assert notification_claim(notification_id=row.pk) is not None  # a resend draws a new token
    assert signed_in(clinic.ravi).get(paths["ravi"]).status_code == 404


def test_a_step_up_capability_needs_a_fresh_second_factor_to_decide(clinic, asked):
    clinic.cancel.requires_step_up = True
    clinic.cancel.save()
    TOTPDevice.objects.create(user=clinic.ravi, name="Phone", confirmed=True)
    _, paths = asked
    client = signed_in(clinic.ravi)
    opened = client.get(paths["ravi"])
    assert opened.status_code == 302 and opened["Location"].startswith("/portal/mfa/verify/")
    assert client.post(paths["ravi"], {"decision": "approve"}).status_code == 403
    assert not ApprovalDecision.objects.exists()
    pass_step_up(client, clinic.ravi)
    assert client.post(paths["ravi"], {"decision": "approve"}).status_code == 302
    assert ApprovalDecision.objects.count() == 1


def test_hostile_parameters_are_escaped_in_email_and_pages(clinic, asked):
    request, paths = asked
    html = next(alt for alt, kind in mail.outbox[0].alternatives if kind == "text/html")
    for text in (
        html,
        signed_in(clinic.ravi).get(paths["ravi"]).content.decode(),
        signed_in(clinic.mei).get(f"/portal/approvals/{request.public_id}/").content.decode(),
    ):
        assert "<script>" not in text and "<img src=x" not in text
        assert "&lt;script&gt;" in text
    assert mail.outbox[0].subject == "Approval needed: appointments.cancel"


def test_the_detail_page_hides_other_organizations_requests(clinic, asked):
    request, _ = asked
    outsider = UserFactory(organization=OrganizationFactory(slug="elsewhere"), role="approver")
    assert signed_in(outsider).get(f"/portal/approvals/{request.public_id}/").status_code == 404
    assert signed_in(clinic.pat).get(f"/portal/approvals/{request.public_id}/").status_code == 404


# --- what works -----------------------------------------------------------


def test_two_approvers_approve_by_link_and_inbox(clinic, asked):
    request, paths = asked
    assert (
        signed_in(clinic.ravi).post(paths["ravi"], {"decision": "approve", "reason": "ok"}).status_code == 302
    )
    mei = signed_in(clinic.mei)
    inbox = mei.get("/portal/approvals/")
    assert "appointments.cancel" in inbox.content.decode()
    assert 'aria-label="1 waiting"' in inbox.content.decode()  # the navigation's pending count
    assert mei.post(f"/portal/approvals/{request.public_id}/", {"decision": "approve"}).status_code == 302
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    assert list(request.decisions.values_list("channel", flat=True)) == ["link", "inbox"]
    assert "Nothing waits for you" in mei.get("/portal/approvals/").content.decode()
    assert "appointments.cancel" in mei.get("/portal/approvals/history/").content.decode()


def test_deciding_twice_in_the_inbox_is_refused_plainly(clinic, asked):
    request, _ = asked
    client = signed_in(clinic.ravi)
    client.post(f"/portal/approvals/{request.public_id}/", {"decision": "approve"})
    again = client.post(f"/portal/approvals/{request.public_id}/", {"decision": "approve"})
    assert again.status_code == 409 and "counts once" in again.content.decode()
    assert ApprovalDecision.objects.count() == 1


def test_inbox_filters(clinic, asked):
    client = signed_in(clinic.ravi)
    assert (
        "appointments.cancel"
        in client.get("/portal/approvals/", {"capability": "appointments.cancel"}).content.decode()
    )
    assert (
        "Nothing waits"
        in client.get("/portal/approvals/", {"capability": "records.read_own"}).content.decode()
    )
    assert "Nothing waits" in client.get("/portal/approvals/", {"user": "someone"}).content.decode()


def test_the_development_outbox_lists_mail_with_working_links_only_in_debug(
    clinic, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.DEBUG = True
    settings.EMAIL_BACKEND = "approvals.dev_mail.OutboxEmailBackend"
    settings.GATEHOUSE_DEV_OUTBOX_DIR = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        clinic.ask(binding_message=HOSTILE)
    client = signed_in(clinic.ravi)
    page = client.get("/portal/approvals/outbox/").content.decode()
    assert page.count("<h2>Approval needed: appointments.cancel</h2>") == 3, page
    assert "<script>" not in page
    ravis = next(a for a in page.split("<article>") if f"To {clinic.ravi.email}" in a)
    href = re.search(r'<a href="http://127\.0\.0\.1:8000(/portal/approvals/link/[^"]+)"', ravis).group(1)
    assert client.get(href).status_code == 200  # the outbox link opens ravi's confirmation page
    settings.DEBUG = False
    assert client.get("/portal/approvals/outbox/").status_code == 404
