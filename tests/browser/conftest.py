"""Playwright driving Debian's Chromium against pytest-django's live server.

The browser is ``/usr/bin/chromium`` (``GATEHOUSE_CHROMIUM`` overrides), never Playwright's download.  Without
it the tests are skipped with the reason, except in CI (``CI`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.portal.conftest import PASSWORD, _fast_password_hashing, world  # noqa: F401 - shared fixtures

CHROMIUM = Path(os.environ.get("GATEHOUSE_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
]


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.exists() or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (install Debian's chromium; CI must)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="package", autouse=True)
def async_unsafe_allowed():
    """Playwright's sync API keeps an event loop in this thread while the browser is open; Django refuses
    ORM calls from a thread with a running loop unless told it is safe (it is: the loop only talks to the
    browser).  Set for this package only, and removed once its browser is closed."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="package")
def chromium(async_unsafe_allowed):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_server):
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    # A CSP violation or a JavaScript dialog (an escaped payload that ran after all) fails the test.
    page.on("console", lambda msg: "Content Security Policy" in msg.text and problems.append(msg.text))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield page
    context.close()
    assert not problems, problems


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/portal/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/")
