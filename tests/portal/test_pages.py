"""Portal pages: who may open what, organization isolation, escaping, CSP, CSRF on every form."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from config import csp
from tests.governance.step_up_helpers import pass_step_up
from tests.portal.conftest import PASSWORD, client_for

ROLES = ("admin", "approver", "member", "auditor")


def admin_urls(world) -> list[str]:
    agent, grant = world["agent"], world["grant"]
    return [
        reverse("portal:dashboard"),
        reverse("portal:agents"),
        reverse("portal:agent", args=[agent.pk]),
        reverse("portal:agent_suspend", args=[agent.pk]),
        reverse("portal:agent_ceiling", args=[agent.pk]),
        reverse("portal:grant_new"),
        f"{reverse('portal:grant_new')}?agent={agent.pk}",
        reverse("portal:grant_revoke", args=[grant.pk]),
    ]


def everyone_urls(world) -> list[str]:
    return [
        reverse("governance:home"),
        reverse("portal:my_agent_revoke", args=[world["agent"].pk]),
        reverse("governance:mfa"),
        reverse("governance:mfa_enrol"),
        "/portal/no-such-page/",
    ]


# --- who may open what -------------------------------------------------------------------------------------


def test_admin_opens_every_admin_page(world):
    client = client_for(world["admin"])
    pass_step_up(client, world["admin"])  # the kill switch's page asks for a fresh second factor
    for url in admin_urls(world):
        assert client.get(url).status_code == 200, url


@pytest.mark.parametrize("role", ["approver", "member", "auditor"])
def test_other_roles_get_the_403_page_on_admin_pages(world, role):
    client = client_for(world[role])
    for url in admin_urls(world):
        response = client.get(url)
        assert response.status_code == 403, url
        assert b"You cannot open this page" in response.content
    for url in (reverse("portal:agent_suspend", args=[world["agent"].pk]), reverse("portal:grant_new")):
        assert client.post(url, {"reason": "x"}).status_code == 403


def test_anonymous_is_sent_to_sign_in(world):
    for url in admin_urls(world) + [reverse("governance:home")]:
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("governance:login"))


def test_navigation_shows_each_role_only_its_pages(world):
    pages = {role: client_for(world[role]).get(reverse("governance:home")).content.decode() for role in ROLES}
    dashboard = reverse("portal:dashboard")
    assert dashboard in pages["admin"]
    for role in ("approver", "member", "auditor"):
        assert dashboard not in pages[role]
        assert reverse("portal:agents") not in pages[role]
    assert reverse("admin:index") in pages["admin"]
    assert reverse("admin:index") not in pages["member"]
    for role in ROLES:
        assert reverse("governance:home") in pages[role]


# --- organization isolation --------------------------------------------------------------------------------


def test_foreign_objects_answer_404_like_missing_ones(world):
    client = client_for(world["admin"])
    other_agent, other_grant = world["other_agent"], world["other_grant"]
    for url in [
        reverse("portal:agent", args=[other_agent.pk]),
        reverse("portal:agent_suspend", args=[other_agent.pk]),
        reverse("portal:agent_ceiling", args=[other_agent.pk]),
        reverse("portal:grant_revoke", args=[other_grant.pk]),
        reverse("portal:agent", args=[999999]),
    ]:
        assert client.get(url).status_code == 404, url
    assert (
        client.post(reverse("portal:agent_suspend", args=[other_agent.pk]), {"reason": "x"}).status_code
        == 404
    )
    assert (
        client.post(reverse("portal:grant_revoke", args=[other_grant.pk]), {"reason": "x"}).status_code == 404
    )
    other_agent.refresh_from_db()
    other_grant.refresh_from_db()
    assert other_agent.status == "active" and other_grant.revoked_at is None


def test_foreign_agent_cannot_be_chosen_for_a_grant(world):
    client = client_for(world["admin"])
    response = client.get(reverse("portal:grant_new"), {"agent": world["other_agent"].pk})
    assert response.status_code == 200
    assert b"secret-billing" not in response.content
    assert b"Select a valid choice" in response.content


def test_lists_hold_nothing_of_the_other_organization(world):
    client = client_for(world["admin"])
    for url in (reverse("portal:dashboard"), reverse("portal:agents")):
        body = client.get(url).content
        assert b"secret-billing" not in body and b"olga" not in body


# --- hostile strings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_script_payloads_are_shown_escaped_everywhere(world, role):
    client = client_for(world[role])
    for url in admin_urls(world) + everyone_urls(world):
        body = client.get(url).content.decode()
        assert "<script>alert" not in body, url
        assert "<img src=x" not in body, url


def test_the_payload_is_visible_as_text(world):
    body = client_for(world["admin"]).get(reverse("portal:agent", args=[world["agent"].pk])).content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body


# --- CSP and no inline script or style ---------------------------------------------------------------


class InlineFinder(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts, style elements and
    attributes, event-handler attributes (parsed as HTML, so text inside attribute values is not flagged)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = {name.lower() for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> element")
        self.found += [f"{name}= on <{tag}>" for name in names if name == "style" or name.startswith("on")]

    handle_startendtag = handle_starttag


def _scan(url: str, response) -> None:
    policy = response.get(csp.HEADER, "")
    for directive in (
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    ):
        assert directive in policy, (url, directive)
    assert "unsafe-inline" not in policy
    finder = InlineFinder()
    finder.feed(response.content.decode())
    assert finder.found == [], (url, finder.found)


@pytest.mark.parametrize("role", ROLES)
def test_every_page_has_the_csp_and_no_inline_script_or_style(world, role):
    client = client_for(world[role])
    for url in admin_urls(world) + everyone_urls(world):
        _scan(url, client.get(url))


def test_signed_out_pages_have_the_csp_too(world):
    for url in (reverse("governance:login"), "/portal/no-such-page/"):
        _scan(url, Client().get(url))


def test_error_pages_are_friendly_and_show_no_trace(world):
    client = client_for(world["member"])
    missing = client.get("/portal/agents/999999/")
    assert missing.status_code in (403, 404)
    not_found = client.get("/portal/no-such-page/")
    assert not_found.status_code == 404
    assert b"We could not find that page" in not_found.content
    assert b"Traceback" not in not_found.content


def test_server_error_page_is_friendly(world, settings):
    from django.test import RequestFactory
    from django.views import defaults

    response = defaults.server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    assert b"Something went wrong on our side" in response.content
    assert b"Traceback" not in response.content


# --- CSRF on every form ----------------------------------------------------------------------------------


def test_every_form_refuses_a_post_without_csrf_token(world):
    agent, grant = world["agent"], world["grant"]
    admin = client_for(world["admin"], csrf_checks=True)
    member = client_for(world["member"], csrf_checks=True)
    posts = [
        (admin, reverse("portal:agent_suspend", args=[agent.pk]), {"reason": "stop"}),
        (admin, reverse("portal:agent_reactivate", args=[agent.pk]), {"reason": "go"}),
        (admin, reverse("portal:agent_ceiling", args=[agent.pk]), {"capabilities": [], "save": "1"}),
        (
            admin,
            f"{reverse('portal:grant_new')}?agent={agent.pk}",
            {"user": world["member"].pk, "capabilities": [world["export"].pk], "expiry": "1d"},
        ),
        (admin, reverse("portal:grant_revoke", args=[grant.pk]), {"reason": "done"}),
        (member, reverse("portal:my_grant_revoke", args=[grant.pk]), {}),
        (member, reverse("portal:my_agent_revoke", args=[agent.pk]), {}),
        (member, reverse("governance:logout"), {}),
    ]
    for client, url, data in posts:
        assert client.post(url, data).status_code == 403, url
    agent.refresh_from_db()
    grant.refresh_from_db()
    assert agent.status == "active" and grant.revoked_at is None
    assert agent.ceiling.count() == 3


def test_forms_carry_a_csrf_token(world):
    admin = client_for(world["admin"])
    for url in admin_urls(world):
        body = admin.get(url).content.decode()
        for form in re.findall(r"<form[^>]*method=\"post\"[^>]*>.*?</form>", body, re.S):
            assert "csrfmiddlewaretoken" in form, url


def test_the_consent_page_may_post_on_to_the_agents_redirect_uri():
    header = csp.policy(form_action=["https://agent.example.test"])
    assert "form-action 'self' https://agent.example.test;" in header
    assert csp._origin("https://user:pw@agent.example.test:8443/cb?x=1") == "https://agent.example.test:8443"
    assert csp._origin("javascript:alert(1)") == ""


SLOTS = ("audit", "approvals")


def test_audit_search_and_inbox_entries_follow_the_roles(world):
    pages = {role: client_for(world[role]).get(reverse("governance:home")).content.decode() for role in ROLES}
    linked = {slot: {r for r, page in pages.items() if f'href="/portal/{slot}/"' in page} for slot in SLOTS}
    assert linked == {"audit": {"admin", "auditor"}, "approvals": {"admin", "approver"}}


def test_admin_pages_and_form_errors_are_inline_free_too(world):
    admin = client_for(world["admin"])
    agent = world["agent"]
    for url in [
        "/admin/",
        "/admin/governance/agent/",
        f"/admin/governance/agent/{agent.pk}/change/",
        "/admin/governance/grant/add/",
        "/admin/audit/auditevent/",
    ]:
        response = admin.get(url)
        assert response.status_code == 200, url
        _scan(url, response)
    posted = [
        (reverse("portal:agent_ceiling", args=[agent.pk]), {"capabilities": [], "preview": "1"}),
        (grant_url := f"{reverse('portal:grant_new')}?agent={agent.pk}", {"expiry": "bogus"}),
        (grant_url, {"user": world["approver"].pk, "capabilities": [world["export"].pk], "expiry": "1d"}),
        (reverse("portal:agent_suspend", args=[agent.pk]), {"reason": ""}),
    ]
    for url, data in posted:
        _scan(url, admin.post(url, data))


def test_the_enrolment_qr_page_is_inline_free(world):
    member = client_for(world["member"])
    member.post(reverse("governance:mfa_enrol"), {"password": PASSWORD})
    response = member.get(reverse("governance:mfa_confirm"))
    assert response.status_code == 200 and b"<svg" in response.content
    _scan("mfa confirm", response)
