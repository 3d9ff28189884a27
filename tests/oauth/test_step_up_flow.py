"""Step-up in the broker over real HTTP: the authorization endpoint re-prompts (capabilities marked
``requires_step_up``, ``acr_values``, ``max_age``), a real TOTP code computed here raises the session, tokens
carry ``acr``/``auth_time`` (JWT and introspection), and the token endpoint refuses a stale or weaker
authentication with ``insufficient_user_authentication`` (refresh, code, token exchange, client credentials).

pat signs in through the real login page (password level).  Time never passes in these tests: a stale
``auth_time`` is made by moving the stored value back (the session's, a refresh family's, a token record's).
"""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.conf import settings
from django.utils.module_loading import import_string
from django_otp.plugins.otp_totp.models import TOTPDevice
from oauth2_provider.models import get_grant_model

from audit.models import AuditEvent
from governance import auth_levels
from governance.models import RefreshTokenAuthentication, TokenRecord
from governance.oauth import jwt_tokens, step_up
from governance.oauth.resource import check_step_up
from tests.factories import CapabilityFactory
from tests.governance.step_up_helpers import code_for
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)

MFA, PWD = auth_levels.ACR_MFA, auth_levels.ACR_PASSWORD
PASSWORD = "correct horse battery staple"
WINDOW = 300  # GATEHOUSE_STEP_UP_MAX_AGE_SECONDS
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


# ---- the world -----------------------------------------------------------------------------------------


class StepUpWorld:
    """pat, a phone (confirmed TOTP device), and an agent granted a plain and a step-up capability."""

    def __init__(self, world):
        self.world = world
        self.member = world.member
        self.sensitive = CapabilityFactory(
            tool_server=world.records, key="records.delete_own", requires_step_up=True, max_token_lifetime=300
        )
        self.agent, self.key = world.interactive_agent(ceiling=[world.read, world.write, self.sensitive])
        helpers.grant(self.agent, world.read, self.member)
        helpers.grant(self.agent, self.sensitive, self.member)
        self.device = TOTPDevice.objects.create(user=self.member, name="phone", confirmed=True)
        self.tool_key = world.tool_server_key(world.records)


@pytest.fixture
def w(world):
    return StepUpWorld(world)


def sign_in(http, issuer, user) -> None:
    """The real login page: password level, fresh auth_time (the user_logged_in signal records them)."""
    page = http.get(f"{issuer}/portal/login/")
    parser = helpers._FormParser()
    parser.feed(page.text)
    answer = http.post(
        f"{issuer}/portal/login/",
        data={**parser.fields, "username": user.username, "password": PASSWORD, "next": "/portal/"},
        headers={"Referer": f"{issuer}/portal/login/"},
    )
    assert answer.status_code == 302, answer.text[:300]


def session(http):
    store = import_string(settings.SESSION_ENGINE + ".SessionStore")
    return store(session_key=http.cookies.get(settings.SESSION_COOKIE_NAME))


def age_session(http, seconds: int, *, prompts: bool = False) -> None:
    """Move the session's auth_time (and, if asked, the remembered prompts) ``seconds`` into the past."""
    store = session(http)
    store[auth_levels.SESSION_AUTH_TIME] -= seconds
    if prompts:
        store[step_up.SESSION_PROMPTS] = {k: v - seconds for k, v in store[step_up.SESSION_PROMPTS].items()}
    store.save()


def verify_with_code(http, issuer, w, next_url: str) -> str:
    """Enter a real TOTP code on the verify page; returns where it sends the person."""
    page = http.get(f"{issuer}/portal/mfa/verify/?{urlencode({'next': next_url})}")
    assert page.status_code == 200
    parser = helpers._FormParser()
    parser.feed(page.text)
    answer = http.post(
        f"{issuer}/portal/mfa/verify/",
        data={**parser.fields, "code": code_for(w.device), "next": next_url},
        headers={"Referer": f"{issuer}/portal/mfa/verify/"},
    )
    assert answer.status_code == 302, answer.text[:300]
    return answer.headers["location"]


# ---- the authorization endpoint --------------------------------------------------------------------------


class Flow:
    """One authorization request (its own PKCE pair) and the steps of the consent round trip."""

    def __init__(self, http, issuer, w, *, scope: str, **extra):
        self.http, self.issuer, self.w = http, issuer, w
        self.verifier, challenge = helpers.pkce_pair()
        params = {
            "response_type": "code",
            "client_id": w.agent.application.client_id,
            "redirect_uri": helpers.REDIRECT_URI,
            "scope": scope,
            "state": "xyz",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": w.world.records.audience,
            **extra,
        }
        self.path = f"/oauth/authorize/?{urlencode(params)}"

    def open(self):
        return self.http.get(self.issuer + self.path)

    def allow(self, page):
        parser = helpers._FormParser()
        parser.feed(page.text)
        # Posted to the bare endpoint, as a browser does: acr_values and max_age travel in the form.
        return self.http.post(
            f"{self.issuer}/oauth/authorize/",
            data={**parser.fields, "allow": "Authorize"},
            headers={"Referer": f"{self.issuer}/oauth/authorize/"},
        )

    def redeem(self, code: str):
        return self.http.post(
            f"{self.issuer}/oauth/token/",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": helpers.REDIRECT_URI,
                "code_verifier": self.verifier,
                **auth(self.w.agent, self.w.key, self.issuer),
            },
        )

    def tokens(self) -> dict:
        page = self.open()
        assert page.status_code == 200, page.headers.get("location")
        query = helpers.code_from(self.allow(page))
        answer = self.redeem(query["code"])
        assert answer.status_code == 200, answer.text
        return answer.json()


def auth(agent, key, issuer) -> dict:
    return helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/")


def prompt_target(response) -> tuple[str, str]:
    """(path of the page a re-prompt sends to, its ``next``)."""
    assert response.status_code == 302, response.status_code
    location = urlsplit(response.headers["location"])
    return location.path, parse_qs(location.query).get("next", [""])[0]


def codes_issued() -> int:
    return get_grant_model().objects.count()


def demands() -> list[dict]:
    events = AuditEvent.objects.filter(action="step_up.required").order_by("seq")
    return [json.loads(e.parameters) for e in events]


def introspect(http, issuer, w, token: str) -> dict:
    data = {"token": token}
    data.update(
        helpers.assertion_params(
            w.tool_key, w.world.records.application.client_id, f"{issuer}/oauth/introspect/"
        )
    )
    return http.post(f"{issuer}/oauth/introspect/", data=data).json()


def test_a_step_up_capability_prompts_then_a_real_totp_code_gets_an_mfa_token(issuer, http, w):
    sign_in(http, issuer, w.member)
    assert session(http)[auth_levels.SESSION_ACR] == PWD
    flow = Flow(http, issuer, w, scope="records.read_own records.delete_own")

    # The challenge: a password-level session is sent to the verify page and comes back to this request.
    path, next_url = prompt_target(flow.open())
    assert path == "/portal/mfa/verify/" and next_url == flow.path
    assert codes_issued() == 0
    demand = demands()[-1]
    assert demand["required_for"] == "/oauth/authorize/"
    assert (demand["acr"], demand["max_age"], demand["current_acr"]) == (MFA, WINDOW, PWD)

    # A real code from the device's key raises the session; the person returns to the same request.
    before = auth_levels.now()
    assert verify_with_code(http, issuer, w, next_url) == flow.path
    page = flow.open()
    assert page.status_code == 200
    assert 'id="step-up"' in page.text and "This authorization needs your second factor" in page.text
    assert "with your authenticator app" in page.text

    query = helpers.code_from(flow.allow(page))
    answer = flow.redeem(query["code"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    claims = jwt_tokens.verify(body["access_token"])
    assert claims["acr"] == MFA and claims["amr"] == ["pwd", "otp", "mfa"]
    assert before - 1 <= claims["auth_time"] <= auth_levels.now()
    record = TokenRecord.objects.get()
    assert record.acr == MFA and int(record.auth_time.timestamp()) == claims["auth_time"]
    issued = json.loads(AuditEvent.objects.get(action="token.issued").parameters)
    assert (issued["acr"], issued["auth_time"]) == (MFA, claims["auth_time"])

    # Introspection says the same, and a tool server's step-up check passes on it.
    described = introspect(http, issuer, w, body["access_token"])
    assert (described["acr"], described["auth_time"], described["amr"]) == (
        MFA, claims["auth_time"], ["pwd", "otp", "mfa"],
    )  # fmt: skip
    assert check_step_up(described, w.sensitive) is None
    # ... until the authentication behind the token is too old for the capability.
    record.auth_time -= timedelta(seconds=WINDOW + 1)
    record.save(update_fields=["auth_time"])
    challenge = check_step_up(introspect(http, issuer, w, body["access_token"]), w.sensitive)
    assert challenge is not None and challenge.status_code == 401
    assert 'error="insufficient_user_authentication"' in challenge.www_authenticate
    assert f'acr_values="{MFA}"' in challenge.www_authenticate
    assert 'max_age="300"' in challenge.www_authenticate


def test_without_a_device_the_prompt_is_enrolment(issuer, http, w):
    w.device.delete()
    sign_in(http, issuer, w.member)
    flow = Flow(http, issuer, w, scope="records.delete_own")
    path, next_url = prompt_target(flow.open())
    assert path == "/portal/mfa/enrol/" and next_url == flow.path
    assert codes_issued() == 0


def test_a_stale_auth_time_is_prompted_again_and_never_gets_a_code(issuer, http, w):
    sign_in(http, issuer, w.member)
    verify_with_code(http, issuer, w, "/portal/")
    assert session(http)[auth_levels.SESSION_ACR] == MFA

    # Stale before the page: prompted, no code.
    age_session(http, WINDOW + 1)
    flow = Flow(http, issuer, w, scope="records.delete_own")
    path, next_url = prompt_target(flow.open())
    assert path == "/portal/mfa/verify/" and next_url == flow.path
    assert demands()[-1]["current_acr"] == MFA  # the level is right, the time is not

    # Fresh at the page, stale by the time the person presses Allow: the POST re-prompts, no code.
    verify_with_code(http, issuer, w, next_url)
    page = flow.open()
    assert page.status_code == 200
    age_session(http, WINDOW + 1, prompts=True)
    answer = flow.allow(page)
    path, back = prompt_target(answer)
    assert path == "/portal/mfa/verify/"
    assert parse_qs(urlsplit(back).query)["client_id"] == [w.agent.application.client_id]
    assert not answer.headers["location"].startswith(helpers.REDIRECT_URI)
    assert codes_issued() == 0

    # The way back is the GET form of the same request: a new code, then the page, then a code.
    assert verify_with_code(http, issuer, w, back) == back
    page = http.get(issuer + back)
    assert page.status_code == 200
    assert "code" in helpers.code_from(flow.allow(page))


def test_acr_values_asks_for_the_second_factor_on_a_low_risk_request(issuer, http, w):
    sign_in(http, issuer, w.member)
    assert Flow(http, issuer, w, scope="records.read_own").open().status_code == 200
    # Unknown values are ignored (OpenID Connect: acr_values is a preference, the token says what was met).
    unknown = Flow(http, issuer, w, scope="records.read_own", acr_values="urn:example:gold")
    assert unknown.open().status_code == 200

    flow = Flow(http, issuer, w, scope="records.read_own", acr_values=f"urn:example:gold {MFA}")
    path, next_url = prompt_target(flow.open())
    assert path == "/portal/mfa/verify/" and codes_issued() == 0
    verify_with_code(http, issuer, w, next_url)
    claims = jwt_tokens.verify(flow.tokens()["access_token"])
    assert claims["acr"] == MFA and claims["scope"] == "records.read_own"

    # A password-level token for the same request without acr_values says so.
    sign_in(http, issuer, w.member)
    plain = jwt_tokens.verify(Flow(http, issuer, w, scope="records.read_own").tokens()["access_token"])
    assert plain["acr"] == PWD and plain["amr"] == ["pwd"]


def test_a_malformed_max_age_is_invalid_request_to_the_client(issuer, http, w):
    sign_in(http, issuer, w.member)
    answer = Flow(http, issuer, w, scope="records.read_own", max_age="soon").open()
    query = helpers.code_from(answer)
    assert answer.headers["location"].startswith(helpers.REDIRECT_URI)
    assert query["error"] == "invalid_request" and query["state"] == "xyz"


def test_max_age_asks_again_and_one_fresh_authentication_answers_that_flow_only(issuer, http, w):
    sign_in(http, issuer, w.member)
    age_session(http, 60)
    assert Flow(http, issuer, w, scope="records.read_own", max_age="120").open().status_code == 200

    flow = Flow(http, issuer, w, scope="records.read_own", max_age="0")
    path, next_url = prompt_target(flow.open())
    assert path == "/portal/mfa/verify/"
    assert demands()[-1]["max_age"] == 0
    verify_with_code(http, issuer, w, next_url)
    page = flow.open()
    assert page.status_code == 200
    # 60 s later (moved, not waited): older than max_age=0, but authenticated after this flow asked.
    age_session(http, 60, prompts=True)
    query = helpers.code_from(flow.allow(page))
    assert "code" in query
    # Another flow asking max_age=0 did not cause that authentication: it asks again.
    assert prompt_target(Flow(http, issuer, w, scope="records.read_own", max_age="0").open())[0] == (
        "/portal/mfa/verify/"
    )
    # And the grace is short: well past it, even the prompted flow asks again.
    second = Flow(http, issuer, w, scope="records.read_own", max_age="0")
    verify_with_code(http, issuer, w, prompt_target(second.open())[1])
    age_session(http, step_up.REAUTH_GRACE_SECONDS + 1, prompts=True)
    assert prompt_target(second.open())[0] == "/portal/mfa/verify/"


# ---- the token endpoint ------------------------------------------------------------------------------------


def refresh(http, issuer, w, refresh_token: str, **extra):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **auth(w.agent, w.key, issuer)}
    data.update(extra)
    return http.post(f"{issuer}/oauth/token/", data=data)


def mfa_tokens(http, issuer, w, scope="records.read_own records.delete_own") -> dict:
    sign_in(http, issuer, w.member)
    flow = Flow(http, issuer, w, scope=scope)
    verify_with_code(http, issuer, w, prompt_target(flow.open())[1])
    return flow.tokens()


def test_a_refresh_keeps_the_original_authentication_and_is_refused_once_it_is_too_old(issuer, http, w):
    first = mfa_tokens(http, issuer, w)
    original = jwt_tokens.verify(first["access_token"])
    family = RefreshTokenAuthentication.objects.get()
    assert (family.acr, int(family.auth_time.timestamp())) == (MFA, original["auth_time"])

    renewed = refresh(http, issuer, w, first["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    claims = jwt_tokens.verify(renewed.json()["access_token"])
    assert (claims["acr"], claims["auth_time"]) == (MFA, original["auth_time"])  # a refresh proves nobody

    family.auth_time -= timedelta(seconds=WINDOW + 1)
    family.save(update_fields=["auth_time"])
    records = TokenRecord.objects.count()
    refused = refresh(http, issuer, w, renewed.json()["refresh_token"])
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"] == "insufficient_user_authentication"
    assert (body["acr_values"], body["max_age"]) == (MFA, WINDOW)
    assert "no-store" in refused.headers["Cache-Control"]
    assert TokenRecord.objects.count() == records
    demand = demands()[-1]
    assert demand["grant_type"] == "refresh_token"
    assert demand["reason"] == "the user's authentication is too old"
    assert demand["requires_step_up"] == ["records.delete_own"] and demand["user_acr"] == MFA
    assert demand["auth_age_seconds"] > WINDOW
    event = AuditEvent.objects.filter(action="step_up.required").order_by("seq").last()
    assert event.agent_id == w.agent.pk and event.on_behalf_of_id == w.member.pk
    assert not AuditEvent.objects.filter(action="token.refused").exists()  # one event per refusal

    # The refused refresh token still narrows to what needs no step-up, keeping acr/auth_time.
    narrowed = refresh(http, issuer, w, renewed.json()["refresh_token"], scope="records.read_own")
    assert narrowed.status_code == 200, narrowed.text
    claims = jwt_tokens.verify(narrowed.json()["access_token"])
    assert claims["scope"] == "records.read_own"
    assert (claims["acr"], claims["auth_time"]) == (MFA, int(family.auth_time.timestamp()))


def test_a_code_below_the_level_its_capabilities_now_need_is_refused(issuer, http, w):
    sign_in(http, issuer, w.member)
    flow = Flow(http, issuer, w, scope="records.read_own")
    query = helpers.code_from(flow.allow(flow.open()))
    # Between consent and redemption the capability starts to need step-up: a password-level code fails.
    w.world.read.requires_step_up = True
    w.world.read.save(update_fields=["requires_step_up"])
    refused = flow.redeem(query["code"])
    assert refused.status_code == 400 and refused.json()["error"] == "insufficient_user_authentication"
    assert demands()[-1]["grant_type"] == "authorization_code"
    assert demands()[-1]["reason"] == "the user's authentication is below the required level"
    assert not TokenRecord.objects.exists()


def test_client_credentials_never_carry_a_step_up_capability(issuer, http, w):
    agent, key = w.world.background_agent(ceiling=[w.world.read, w.sensitive])
    helpers.grant(agent, w.sensitive)
    refused = http.post(
        f"{issuer}/oauth/token/",
        data={
            "grant_type": "client_credentials",
            "scope": "records.delete_own",
            "resource": w.world.records.audience,
            **auth(agent, key, issuer),
        },
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    assert demands()[-1]["reason"] == "no user to step up"
    assert not TokenRecord.objects.exists()


def test_an_exchange_keeps_the_subject_authentication_and_needs_it_recent(issuer, http, w):
    subject = mfa_tokens(http, issuer, w, scope="records.delete_own")["access_token"]
    helper, helper_key = w.world.interactive_agent(name="helper", ceiling=[w.sensitive])
    helpers.grant(helper, w.sensitive, w.member)

    def exchange():
        data = {
            "grant_type": EXCHANGE,
            "subject_token": subject,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "resource": w.world.records.audience,
            **auth(helper, helper_key, issuer),
        }
        return http.post(f"{issuer}/oauth/token/", data=data)

    answer = exchange()
    assert answer.status_code == 200, answer.text
    original, exchanged = jwt_tokens.verify(subject), jwt_tokens.verify(answer.json()["access_token"])
    assert (exchanged["acr"], exchanged["auth_time"]) == (original["acr"], original["auth_time"])
    assert exchanged["act"] == {"sub": helper.application.client_id}

    record = TokenRecord.objects.get(jti=original["jti"])
    record.auth_time -= timedelta(seconds=WINDOW + 1)
    record.save(update_fields=["auth_time"])
    refused = exchange()
    assert refused.status_code == 400 and refused.json()["error"] == "insufficient_user_authentication"
    assert demands()[-1]["grant_type"] == EXCHANGE


# ---- the tool-server helper and metadata ---------------------------------------------------------------


def test_check_step_up_challenges_tokens_without_a_fresh_second_factor(w):
    now = auth_levels.now()
    fresh = {"active": True, "acr": MFA, "auth_time": now - 10}
    assert check_step_up(fresh, w.sensitive) is None
    assert check_step_up({"active": True}, w.world.read) is None  # no step-up needed

    for result in (
        {"active": True},  # no acr at all (e.g. a token from before step-up)
        {"active": True, "acr": PWD, "auth_time": now},
        {"active": True, "acr": MFA, "auth_time": now - WINDOW - 1},
        {"active": True, "acr": MFA},
        {"active": True, "acr": MFA, "auth_time": str(now)},
    ):
        challenge = check_step_up(result, w.sensitive)
        assert challenge is not None and challenge.status_code == 401, result
        assert challenge.www_authenticate.startswith('Bearer error="insufficient_user_authentication"')
    assert check_step_up(fresh, w.sensitive, max_age=5) is not None
    bound = {**fresh, "auth_time": now - WINDOW - 1, "cnf": {"jkt": "x" * 43}}
    assert check_step_up(bound, w.sensitive).response_headers()["WWW-Authenticate"].startswith("DPoP ")


def test_metadata_lists_the_levels_acr_values_can_ask_for(issuer, http):
    document = http.get(f"{issuer}/.well-known/oauth-authorization-server").json()
    assert document["acr_values_supported"] == [PWD, MFA]
