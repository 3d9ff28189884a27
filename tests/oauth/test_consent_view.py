"""The consent page of the authorization endpoint, and the portal sign-in it sends people to."""

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.urls import reverse
from oauth2_provider.models import get_grant_model

from audit.models import AuditEvent
from governance.models import Grant
from governance.services import agent_suspend
from tests.factories import AgentFactory, CapabilityFactory, GrantFactory, UserFactory
from tests.governance.step_up_helpers import pass_step_up

REDIRECT = "https://agent.example.test/callback"
PASSWORD = "correct horse battery staple"


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@pytest.fixture
def caps(tool_server, capability):
    return {
        "read": capability,
        "note": CapabilityFactory(tool_server=tool_server, key="records.write_note", requires_step_up=True),
        "delete": CapabilityFactory(tool_server=tool_server, key="records.delete", risk_level="high"),
        "export": CapabilityFactory(
            tool_server=tool_server, key="records.export", requires_approval=True, approvals_required=1
        ),
        "outside": CapabilityFactory(tool_server=tool_server, key="records.read_all"),
    }


@pytest.fixture
def voice(org, admin, caps):
    ceiling = [caps["read"], caps["note"], caps["delete"], caps["export"]]
    return AgentFactory(
        organization=org, owner=admin, name="voice", description="Answers the phone", ceiling=ceiling
    )


@pytest.fixture
def browser(member):
    client = Client()
    client.force_login(member)
    # records.write_note needs step-up: the authorization endpoint asks for a fresh second factor first.
    pass_step_up(client, member)
    return client


def authorize_params(agent, tool_server, scope, **extra):
    _, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": agent.application.client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st4te",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": tool_server.audience,
    }
    params.update(extra)
    return params


def form_of(response):
    """The hidden fields the page asks the browser to post back."""
    form = response.context["form"]
    return {
        name: field.value() or "" for name, field in ((n, form[n]) for n in form.fields) if name != "allow"
    }


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


ALL = "records.read_own records.write_note records.delete records.export"


def test_anonymous_visitor_is_sent_to_the_portal_sign_in(voice, tool_server):
    response = Client().get(
        reverse("oauth:authorize"), authorize_params(voice, tool_server, "records.read_own")
    )
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("governance:login") + "?next=")


def test_page_shows_agent_tool_server_and_each_capability_status(browser, voice, tool_server, member, caps):
    GrantFactory(agent=voice, user=member, capability=caps["read"])
    response = browser.get(reverse("oauth:authorize"), authorize_params(voice, tool_server, ALL))
    assert response.status_code == 200, response.get("Location")
    page = response.content.decode()
    for text in ("voice", "Answers the phone", "Clinic", "admin", "Active", "Records", tool_server.audience):
        assert text in page
    statuses = {line.key: line.status for line in response.context["lines"]}
    assert statuses == {
        "records.read_own": "granted",
        "records.write_note": "consent",
        "records.delete": "needs_approver",
        "records.export": "needs_approver",
    }
    assert "step-up" in page  # write_note is flagged
    assert not Grant.objects.filter(capability=caps["note"]).exists()  # a GET decides nothing


def test_allow_grants_only_consentable_capabilities_and_the_code_carries_only_those(
    browser, voice, tool_server, member, caps
):
    response = browser.get(reverse("oauth:authorize"), authorize_params(voice, tool_server, ALL))
    response = browser.post(reverse("oauth:authorize"), {**form_of(response), "allow": "Authorize"})
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    assert query["state"] == ["st4te"] and "code" in query
    granted = set(
        Grant.objects.active().filter(agent=voice, user=member).values_list("capability__key", flat=True)
    )
    assert granted == {"records.read_own", "records.write_note"}
    # The code carries only what the grants now cover (DOT stores one code row per authorization).
    [code] = get_grant_model().objects.filter(application=voice.application, user=member)
    assert set(code.scope.split()) == {"records.read_own", "records.write_note"}
    [event] = events("consent.given")
    assert event.actor_id == str(member.pk) and event.agent_id == voice.pk
    assert event.capabilities == "records.read_own records.write_note"
    assert "records.export" in event.parameters and "records.delete" in event.parameters  # not_granted listed


def test_asking_beyond_the_ceiling_never_reaches_the_page(browser, voice, tool_server, member):
    """The broker refuses at once (invalid_scope to the client) and records an elevation attempt."""
    params = authorize_params(voice, tool_server, "records.read_own records.read_all")
    response = browser.get(reverse("oauth:authorize"), params)
    assert response.status_code == 302
    assert parse_qs(urlsplit(response["Location"]).query)["error"] == ["invalid_scope"]
    [event] = events("elevation.attempted")
    assert event.agent_id == voice.pk and "records.read_all" in event.parameters
    assert events("token.refused") == []  # one event for one refusal
    assert not Grant.objects.filter(agent=voice).exists()


def test_deny_grants_nothing_records_the_denial_and_tells_the_client(browser, voice, tool_server, member):
    response = browser.get(
        reverse("oauth:authorize"), authorize_params(voice, tool_server, "records.read_own")
    )
    response = browser.post(reverse("oauth:authorize"), form_of(response))
    assert response.status_code == 302
    assert parse_qs(urlsplit(response["Location"]).query)["error"] == ["access_denied"]
    assert not Grant.objects.filter(agent=voice).exists()
    [event] = events("consent.denied")
    assert event.result == "denied"


def test_tampered_scope_in_the_form_cannot_go_beyond_the_ceiling(browser, voice, tool_server, member):
    response = browser.get(
        reverse("oauth:authorize"), authorize_params(voice, tool_server, "records.read_own")
    )
    fields = {**form_of(response), "scope": "records.read_own records.read_all records.export", "allow": "1"}
    browser.post(reverse("oauth:authorize"), fields)
    granted = set(Grant.objects.filter(agent=voice, user=member).values_list("capability__key", flat=True))
    assert granted <= {"records.read_own"}


def test_tampered_resource_in_the_form_is_refused_without_grants(browser, voice, tool_server):
    response = browser.get(
        reverse("oauth:authorize"), authorize_params(voice, tool_server, "records.read_own")
    )
    fields = {**form_of(response), "resource": "https://evil.example.test/mcp", "allow": "1"}
    response = browser.post(reverse("oauth:authorize"), fields)
    assert response.status_code == 400
    assert not Grant.objects.filter(agent=voice).exists()
    assert events("token.refused")


def test_suspended_agent_gets_a_plain_error_page_and_an_audit_event(browser, voice, tool_server, system):
    agent_suspend(actor=system, agent=voice, reason="incident")
    response = browser.get(
        reverse("oauth:authorize"), authorize_params(voice, tool_server, "records.read_own")
    )
    assert response.status_code == 403
    assert b"suspended" in response.content and b"authorizationForm" not in response.content
    [event] = events("token.refused")
    assert event.agent_id == voice.pk and "agent suspended" in event.parameters


def test_unknown_resource_is_an_invalid_target_redirect(browser, voice, tool_server):
    params = authorize_params(
        voice, tool_server, "records.read_own", resource="https://unknown.example.test/mcp"
    )
    response = browser.get(reverse("oauth:authorize"), params)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response["Location"]).query)
    assert query["error"] == ["invalid_target"] and query["state"] == ["st4te"]
    [event] = events("token.refused")
    assert event.agent_id == voice.pk and event.on_behalf_of_id is not None


def test_missing_resource_is_an_invalid_target_redirect(browser, voice, tool_server):
    params = authorize_params(voice, tool_server, "records.read_own")
    del params["resource"]
    response = browser.get(reverse("oauth:authorize"), params)
    assert parse_qs(urlsplit(response["Location"]).query)["error"] == ["invalid_target"]


def test_user_of_another_organization_is_refused(voice, tool_server, other_org):
    stranger = UserFactory(organization=other_org, username="stranger")
    client = Client()
    client.force_login(stranger)
    response = client.get(
        reverse("oauth:authorize"), authorize_params(voice, tool_server, "records.read_own")
    )
    assert response.status_code == 403
    assert b"another organization" in response.content
    [event] = events("token.refused")
    assert "user of another organization" in event.parameters


def test_consent_post_needs_a_csrf_token(voice, tool_server, member):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    response = client.get(
        reverse("oauth:authorize"), authorize_params(voice, tool_server, "records.read_own")
    )
    response = client.post(reverse("oauth:authorize"), {**form_of(response), "allow": "1"})
    assert response.status_code == 403
    assert not Grant.objects.filter(agent=voice).exists()


def test_approval_prompt_auto_cannot_skip_the_page(browser, voice, tool_server, member, caps):
    GrantFactory(agent=voice, user=member, capability=caps["read"])
    params = authorize_params(voice, tool_server, "records.read_own", approval_prompt="auto")
    response = browser.get(reverse("oauth:authorize"), params)
    assert response.status_code == 200 and b"authorizationForm" in response.content


def test_sign_in_and_out(member):
    client = Client(enforce_csrf_checks=False)
    page = client.get(reverse("governance:login"))
    assert page.status_code == 200 and b"Sign in" in page.content
    wrong = client.post(reverse("governance:login"), {"username": "pat", "password": "nope"})
    assert wrong.status_code == 200 and b"did not match" in wrong.content
    right = client.post(
        reverse("governance:login"), {"username": "pat", "password": PASSWORD, "next": "/portal/"}
    )
    assert right.status_code == 302 and right["Location"] == "/portal/"
    assert b"No agent holds a grant" in client.get("/portal/").content
    assert client.get(reverse("governance:logout")).status_code == 405  # signing out is a POST
    client.post(reverse("governance:logout"))
    assert client.get("/portal/").status_code == 302


def test_consent_page_csp_lets_its_form_end_at_the_registered_redirect_uri_only(browser, voice, tool_server):
    response = browser.get(
        reverse("oauth:authorize"), authorize_params(voice, tool_server, "records.read_own")
    )
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "form-action 'self' https://agent.example.test;" in policy
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    page = response.content.decode()
    assert "<style" not in page and " style=" not in page and "<script>" not in page


def test_an_existing_high_risk_or_approval_grant_is_honoured_by_consent_without_being_extended(
    browser, voice, tool_server, member, caps
):
    """Consent may not create a high-risk or approval-only grant, but one an admin gave is honoured."""
    delete = GrantFactory(agent=voice, user=member, capability=caps["delete"])
    export = GrantFactory(agent=voice, user=member, capability=caps["export"])
    before = {g.pk: g.expires_at for g in (delete, export)}
    scope = "records.read_own records.delete records.export"
    page = browser.get(reverse("oauth:authorize"), authorize_params(voice, tool_server, scope))
    assert page.status_code == 200, page.get("Location")
    statuses = {line.key: line.status for line in page.context["lines"]}
    assert statuses["records.delete"] == statuses["records.export"] == "granted"
    response = browser.post(reverse("oauth:authorize"), {**form_of(page), "allow": "Authorize"})
    assert response.status_code == 302, response.content[:300]
    query = parse_qs(urlsplit(response["Location"]).query)
    assert "code" in query and "error" not in query
    [code] = get_grant_model().objects.filter(application=voice.application, user=member)
    assert set(code.scope.split()) == set(scope.split())
    # Consent created only the low-risk grant; the admin's grants are untouched (not renewed, not duplicated).
    assert Grant.objects.filter(agent=voice, user=member, capability=caps["delete"]).count() == 1
    assert Grant.objects.filter(agent=voice, user=member, capability=caps["export"]).count() == 1
    for grant in Grant.objects.filter(pk__in=before):
        assert grant.expires_at == before[grant.pk]
    [event] = events("consent.given")
    assert event.capabilities == "records.read_own"


def test_only_existing_high_risk_grants_asked_still_get_a_code(browser, voice, tool_server, member, caps):
    GrantFactory(agent=voice, user=member, capability=caps["delete"])
    page = browser.get(reverse("oauth:authorize"), authorize_params(voice, tool_server, "records.delete"))
    response = browser.post(reverse("oauth:authorize"), {**form_of(page), "allow": "Authorize"})
    assert response.status_code == 302 and "code" in parse_qs(urlsplit(response["Location"]).query)
    assert not events("consent.given")
    # Without the grant, consent still cannot give it: the code is never issued.
    Grant.objects.filter(capability=caps["delete"]).delete()
    page = browser.get(reverse("oauth:authorize"), authorize_params(voice, tool_server, "records.delete"))
    response = browser.post(reverse("oauth:authorize"), {**form_of(page), "allow": "Authorize"})
    assert response.status_code in (302, 400, 403)
    assert "code" not in parse_qs(urlsplit(response.get("Location", "")).query)
