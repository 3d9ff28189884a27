"""The portal in a real browser: sign in, grant, revoke, suspend, and withdraw an agent from my page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from governance.models import Grant
from tests.browser.conftest import sign_in

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
    sign_in(page, "alice")
    page.goto(f"/portal/agents/{agent.pk}/")
    page.get_by_role("link", name=re.compile("^Suspend")).click()
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
