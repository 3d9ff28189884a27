"""Sign-in: brute force is throttled per account and per address, without telling whether an account exists,
and every sign-in (success, failure, lockout) is audited.  Over real HTTP, at the portal and the admin login.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.contrib.auth import authenticate
from django.core.cache import cache

from audit.actions import Action, ActorType, Result
from audit.models import AuditEvent
from governance.services import sign_in
from tests.factories import AdminFactory, UserFactory

PASSWORD = "correct horse battery staple"
WRONG = "not the password at all"
PORTAL = "/portal/login/"
ADMIN = "/admin/login/"


@pytest.fixture(autouse=True)
def fast_hashes(settings):
    """Hundreds of password checks: a fast hasher keeps them cheap (the throttle does not depend on it)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def forget_throttles():
    """Counters live in the cache (Redis with REDIS_URL), which outlives a test's database."""
    used: list[tuple[str, str]] = []
    yield used
    for username, address in used:
        keys = [sign_in.account_key(username), sign_in.address_key(address)]
        cache.delete_many(keys + [sign_in.notice_key(key) for key in keys])


def post_login(client, url, username, password, address, used, **extra):
    used.append((username, address))
    return client.post(
        url, {"username": username, "password": password, "next": "/portal/"}, REMOTE_ADDR=address, **extra
    )


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def events(action: Action):
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def form_error(response) -> str:
    """The page minus the CSRF token and the echoed username: what a caller learns from the answer."""
    page = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", response.content).decode()
    return re.sub(r'(name="username"[^>]*?) value="[^"]*"', r"\1", page)


@pytest.mark.parametrize("url", [PORTAL, ADMIN])
def test_fifty_wrong_passwords_then_the_right_one_does_not_sign_in(client, org, url, forget_throttles):
    person = AdminFactory(organization=org, username="victim")
    for _ in range(50):
        response = post_login(client, url, person.username, WRONG, "198.51.100.7", forget_throttles)
        assert response.status_code == 200 and not signed_in(client)
    wrong_answer = form_error(response)
    right = post_login(client, url, person.username, PASSWORD, "198.51.100.7", forget_throttles)
    assert right.status_code == 200 and not signed_in(client)
    assert form_error(right) == wrong_answer  # a locked account answers as a wrong password does

    limit = sign_in.max_failures_per_account()
    failed = events(Action.SIGN_IN_FAILED)
    assert len(failed) == limit  # attempts while locked are not checked, and not recorded one by one
    assert all(e.result == Result.FAILURE and e.actor_type == ActorType.ANONYMOUS for e in failed)
    assert failed[0].target_id == str(person.pk) and failed[0].client_ip == "198.51.100.7"
    [locked] = events(Action.SIGN_IN_LOCKED_OUT)
    assert locked.result == Result.DENIED and locked.target_id == str(person.pk)
    assert events(Action.SIGN_IN_SUCCEEDED) == []
    stored = json.dumps(list(AuditEvent.objects.values_list("parameters", "actor_label")))
    assert WRONG not in stored and PASSWORD not in stored


def test_the_lock_is_per_account_not_per_person_at_another_address(client, org, forget_throttles):
    """A locked account stays locked from a fresh address; other accounts at the first address still work."""
    victim = UserFactory(organization=org, username="victim")
    other = UserFactory(organization=org, username="colleague")
    for _ in range(sign_in.max_failures_per_account()):
        post_login(client, PORTAL, victim.username, WRONG, "198.51.100.8", forget_throttles)
    post_login(client, PORTAL, victim.username, PASSWORD, "203.0.113.80", forget_throttles)
    assert not signed_in(client)
    post_login(client, PORTAL, other.username, PASSWORD, "198.51.100.8", forget_throttles)
    assert signed_in(client)


def test_spraying_many_usernames_from_one_address_locks_the_address(client, org, forget_throttles, settings):
    person = UserFactory(organization=org, username="sprayed")
    for n in range(sign_in.max_failures_per_address()):
        post_login(client, PORTAL, f"guess{n}", WRONG, "198.51.100.9", forget_throttles)
    post_login(client, PORTAL, person.username, PASSWORD, "198.51.100.9", forget_throttles)
    assert not signed_in(client)
    locked = events(Action.SIGN_IN_LOCKED_OUT)
    assert locked and json.loads(locked[-1].parameters)["locked"] == "address"
    # The same person from elsewhere is not held back by someone else's address.
    post_login(client, PORTAL, person.username, PASSWORD, "203.0.113.90", forget_throttles)
    assert signed_in(client)


def test_x_forwarded_for_is_not_trusted_without_configured_proxies(client, org, forget_throttles):
    person = UserFactory(organization=org, username="behind-nat")
    for n in range(sign_in.max_failures_per_address()):
        post_login(
            client,
            PORTAL,
            f"guess{n}",
            WRONG,
            "198.51.100.10",
            forget_throttles,
            HTTP_X_FORWARDED_FOR=f"203.0.113.{n}",
        )
    post_login(
        client,
        PORTAL,
        person.username,
        PASSWORD,
        "198.51.100.10",
        forget_throttles,
        HTTP_X_FORWARDED_FOR="203.0.113.250",
    )
    assert not signed_in(client)


def test_with_one_trusted_proxy_the_forwarded_address_is_the_client(client, org, forget_throttles, settings):
    settings.GATEHOUSE_TRUSTED_PROXY_COUNT = 1
    person = UserFactory(organization=org, username="proxied")
    for n in range(sign_in.max_failures_per_address()):
        post_login(
            client,
            PORTAL,
            f"guess{n}",
            WRONG,
            "10.0.0.1",
            forget_throttles,
            HTTP_X_FORWARDED_FOR="198.51.100.11",
        )
    forget_throttles.append(("-", "198.51.100.11"))
    post_login(
        client,
        PORTAL,
        person.username,
        PASSWORD,
        "10.0.0.1",
        forget_throttles,
        HTTP_X_FORWARDED_FOR="203.0.113.11",
    )
    assert signed_in(client)  # the proxy's own address is not what got locked


def test_unknown_and_known_accounts_answer_alike(client, org, forget_throttles):
    UserFactory(organization=org, username="exists")
    answers = {}
    for username in ("exists", "does-not-exist"):
        first = post_login(client, PORTAL, username, WRONG, "198.51.100.12", forget_throttles)
        for _ in range(sign_in.max_failures_per_account()):
            last = post_login(client, PORTAL, username, WRONG, "198.51.100.12", forget_throttles)
        answers[username] = (first.status_code, form_error(first), last.status_code, form_error(last))
    assert answers["exists"] == answers["does-not-exist"]
    # An unknown name is locked too (so a lockout says nothing about existence), and is audited, bounded.
    locked = [json.loads(e.parameters)["username"] for e in events(Action.SIGN_IN_LOCKED_OUT)]
    assert locked == ["exists", "does-not-exist"]


def test_a_success_is_audited_and_clears_the_accounts_failures(client, org, forget_throttles):
    person = UserFactory(organization=org, username="forgetful")
    for _ in range(2):
        for _ in range(sign_in.max_failures_per_account() - 1):
            post_login(client, PORTAL, person.username, WRONG, "198.51.100.13", forget_throttles)
        post_login(client, PORTAL, person.username, PASSWORD, "198.51.100.13", forget_throttles)
        assert signed_in(client)
        client.logout()
    succeeded = events(Action.SIGN_IN_SUCCEEDED)
    assert len(succeeded) == 2
    assert succeeded[0].actor_id == str(person.pk) and succeeded[0].client_ip == "198.51.100.13"
    assert json.loads(succeeded[0].parameters)["via"] == "portal"


def test_admin_sign_in_is_audited_as_such(client, org, forget_throttles):
    admin = AdminFactory(organization=org, username="boss")
    post_login(client, ADMIN, admin.username, PASSWORD, "198.51.100.14", forget_throttles)
    assert signed_in(client)
    [event] = events(Action.SIGN_IN_SUCCEEDED)
    assert json.loads(event.parameters)["via"] == "admin"


@pytest.mark.parametrize(
    "username",
    ["evil\u202egnp.exe", "zero\u200bwidth", "ctrl\x1b[31mred", "a" * 150, "<script>x</script>"],
)
def test_the_attempted_username_is_bounded_and_sanitised(client, username, forget_throttles, db):
    response = post_login(client, PORTAL, username, WRONG, "198.51.100.15", forget_throttles)
    assert response.status_code == 200
    [event] = events(Action.SIGN_IN_FAILED)
    stored = json.loads(event.parameters)["username"]
    assert len(stored) <= sign_in.USERNAME_LIMIT
    assert not re.search(r"[\u202a-\u202e\u2066-\u2069\u200b-\u200f\x00-\x1f\x7f]", stored)
    assert (
        stored.replace("\ufffd", "") == re.sub(r"[\u202e\u200b\x1b]", "", username)[: sign_in.USERNAME_LIMIT]
    )


@pytest.mark.parametrize("field", ["username", "password"])
@pytest.mark.parametrize("value", ["nul\x00byte", "x" * 100_000])
def test_hostile_input_never_gives_a_5xx(client, db, field, value, forget_throttles):
    data = {"username": "someone", "password": WRONG, field: value}
    forget_throttles.append((data["username"], "198.51.100.16"))
    for url in (PORTAL, ADMIN):
        response = client.post(url, data, REMOTE_ADDR="198.51.100.16")
        assert response.status_code == 200 and not signed_in(client)


@pytest.mark.parametrize("username", ["nul\x00byte", "x" * 10_000])
def test_the_backend_never_sends_an_impossible_username_to_the_database(db, username, forget_throttles):
    """Forms refuse these before; any other caller of authenticate() must not meet PostgreSQL's DataError."""
    forget_throttles.append((username, "-"))
    assert authenticate(None, username=username, password=WRONG) is None
    [event] = events(Action.SIGN_IN_FAILED)
    assert "\x00" not in json.loads(event.parameters)["username"]


def _sign_in_over_http(base: str, username: str, password: str) -> bool:
    """One browser: fetch the form (CSRF cookie and token), post it; True when a session cookie came back."""
    with httpx.Client(base_url=base, timeout=60) as browser:
        form = browser.get(PORTAL)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        answer = browser.post(
            PORTAL,
            data={"username": username, "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": base + PORTAL},
        )
        return answer.status_code == 302 and "sessionid" in browser.cookies


def test_parallel_guesses_cannot_slip_past_the_limit(
    live_server, transactional_db, org, forget_throttles, settings
):
    """Twenty guesses at once on a live server: each is counted before its password check, so exactly the
    limit reach the check (a check-then-count throttle lets parallel requests through together while the
    slow password hash runs, so this test keeps Django's real hasher)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    person = UserFactory(organization=org, username="raced")
    forget_throttles.append((person.username, "127.0.0.1"))
    limit = sign_in.max_failures_per_account()
    with ThreadPoolExecutor(max_workers=limit * 2) as pool:
        results = list(
            pool.map(lambda _: _sign_in_over_http(live_server.url, "raced", WRONG), range(limit * 2))
        )
    assert not any(results)
    assert len(events(Action.SIGN_IN_FAILED)) == limit
    assert len(events(Action.SIGN_IN_LOCKED_OUT)) == 1
    assert not _sign_in_over_http(live_server.url, "raced", PASSWORD)
