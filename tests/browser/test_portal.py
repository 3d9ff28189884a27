"""The portal in a real browser: sign in, grant, revoke, suspend, and withdraw an agent from my page."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from approvals.services import grant_request_create
from config.celery import app as celery_app
from governance.models import Grant
from tests.browser.conftest import sign_in
from tests.factories import AdminFactory
from tests.governance.step_up_helpers import code_for

pytestmark = pytest.mark.browser


def test_sign_in_lands_on_my_agents(page, world):
    sign_in(page, "pat")
    expect(page.get_by_role("heading", level=1)).to_have_text("My agents")
    expect(page.get_by_role("navigation", name="Main")).not_to_contain_text("Dashboard")
    # The hostile agent name is text, not markup.
    expect(page.locator("main")).to_contain_text('voice <script>alert("x")</script>')


def test_wrong_password_is_a_plain_sentence(page, world):
    page.goto("/portal/login/")
    page.get_by_label("Username").fill("pat")
    page.get_by_label("Password").fill("not it")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("did not match")


def test_admin_grants_then_revokes_a_capability(page, world):
    agent = world["agent"]
    sign_in(page, "alice")
    page.get_by_role("link", name="Agents", exact=True).click()
    page.get_by_role("link", name=re.compile("^voice")).click()
    page.get_by_role("link", name="Grant a capability").click()
    page.get_by_label("User").select_option(label="arno")
    page.get_by_label(re.compile("records.read_own")).check()
    page.get_by_label("7 days").check()
    page.get_by_label("Reason").fill("covering the front desk")
    page.get_by_role("button", name="Grant", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Granted: records.read_own for arno")
    grant = Grant.objects.active().get(agent=agent, user=world["approver"])

    page.get_by_role("link", name="Revoke records.read_own for arno").click()
    page.get_by_label("Reason").fill("cover ended")
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_contain_text("Revoked")
    grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.revoke_reason == "cover ended"


def test_admin_suspends_an_agent_after_confirming(page, world):
    agent = world["agent"]
    device = TOTPDevice.objects.create(user=world["admin"], name="phone", confirmed=True)
    sign_in(page, "alice")
    page.goto(f"/portal/agents/{agent.pk}/")
    page.get_by_role("link", name=re.compile("^Suspend")).click()
    # The kill switch needs a fresh second factor first (as in the admin), then comes back to confirm.
    page.get_by_label("Code").fill(code_for(device))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Suspend")
    page.get_by_label("Reason").fill("calls look injected")
    page.get_by_role("button", name=re.compile("now$")).click()
    expect(page.get_by_role("status")).to_contain_text("is suspended")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Suspended")
    agent.refresh_from_db()
    assert agent.status == "suspended"


def test_member_withdraws_an_agent_from_my_page(page, world):
    sign_in(page, "pat")
    page.get_by_role("link", name=re.compile("^Revoke voice")).click()
    page.get_by_role("button", name=re.compile("^Revoke voice")).click()
    expect(page.get_by_role("status")).to_contain_text("can no longer act for you")
    expect(page.locator("main")).to_contain_text("No agent holds a grant for you.")
    assert not Grant.objects.active().filter(user=world["member"]).exists()


def test_member_is_refused_admin_pages(page, world):
    sign_in(page, "pat")
    response = page.goto("/portal/dashboard/")
    assert response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("You cannot open this page")


def test_keyboard_reaches_the_skip_link_first_and_it_shows(page, world):
    sign_in(page, "alice")
    page.goto("/portal/dashboard/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")


def test_auditor_searches_by_agent_and_time_then_exports_csv(page, world):
    agent = world["agent"]
    now = timezone.now()
    sign_in(page, "audra")
    page.get_by_role("link", name="Audit search").click()
    page.get_by_label("Agent").select_option(str(agent.pk))
    page.get_by_label("From (UTC)").fill((now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"))
    page.get_by_label("Until (UTC)").fill((now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"))
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#audit-results tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text('voice <script>alert("x")</script>')
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    exported = list(csv.reader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    header, lines = exported[0], exported[1:]
    assert len(lines) == 3
    assert {line[header.index("action")] for line in lines} == {
        "decision.denied",
        "elevation.attempted",
        "decision.allowed",
    }


def test_a_second_admin_approves_a_high_risk_grant_from_the_inbox(page, world, settings):
    """A grant of a critical capability filed from the grant page waits; another admin approves it."""
    second = AdminFactory(organization=world["org"], username="bert")
    grant_request_create(
        actor=second, agent=world["agent"], capability=world["export"], user=world["approver"]
    )
    sign_in(page, "alice")
    inbox = page.get_by_role("link", name=re.compile("^Inbox"))
    expect(inbox).to_contain_text("1")
    inbox.click()
    page.get_by_role("link", name="records.export").click()
    detail = page.url
    # Deciding on a high-risk grant needs a fresh second factor: prove it first, then approve.
    device = TOTPDevice.objects.create(user=world["admin"], name="phone", confirmed=True)
    page.goto(f"/portal/mfa/verify/?next={detail.removeprefix(page.url.split('/portal/')[0])}")
    page.get_by_label("Code").fill(code_for(device))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(detail)
    page.get_by_label(re.compile("^Reason")).fill("covering nights")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("main")).to_contain_text("approved", ignore_case=True)
    assert (
        Grant.objects.active()
        .filter(agent=world["agent"], user=world["approver"], capability=world["export"])
        .exists()
    )


EMAILED_LINK = re.compile(r"http://[^\s\"<>]+?(/portal/approvals/link/[A-Za-z0-9_-]+/)")


@pytest.fixture
def mail_sent_in_process():
    """The approval email is a Celery task; with REDIS_URL it would go to a worker (tests/approvals run one),
    here it runs in this process so the mail lands in Django's test outbox."""
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager


def test_a_second_admin_approves_a_high_risk_grant_from_the_emailed_link(
    page, world, mailoutbox, mail_sent_in_process
):
    """The email's one-time link opens a confirmation page; only the POST of its Approve button decides."""
    second = AdminFactory(organization=world["org"], username="bert")
    grant_request_create(
        actor=second, agent=world["agent"], capability=world["export"], user=world["approver"]
    )
    to_alice = [m for m in mailoutbox if m.to == [world["admin"].email]]
    assert len(to_alice) == 1, [m.to for m in mailoutbox]
    link = EMAILED_LINK.search(to_alice[0].body).group(1)
    sign_in(page, "alice")
    # The capability is critical: a fresh second factor first, then the link (GET shows, never decides).
    device = TOTPDevice.objects.create(user=world["admin"], name="phone", confirmed=True)
    page.goto(f"/portal/mfa/verify/?next={link}")
    page.get_by_label("Code").fill(code_for(device))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(re.compile(re.escape(link) + "$"))
    expect(page.locator("main")).to_contain_text("records.export")
    assert not Grant.objects.active().filter(agent=world["agent"], capability=world["export"]).exists()
    page.get_by_label(re.compile("^Reason")).fill("covering nights")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("main")).to_contain_text("approved", ignore_case=True)
    assert (
        Grant.objects.active()
        .filter(agent=world["agent"], user=world["approver"], capability=world["export"])
        .exists()
    )
    # The link was for one use: opening it again is refused with a plain sentence.
    page.goto(link)
    expect(page.locator("main")).not_to_contain_text("Approve")
