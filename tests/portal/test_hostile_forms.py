"""Hostile input at every form of the portal: a NUL byte, an over-long value in each field, a 3 MB body.

PostgreSQL refuses NUL in text (``DataError``), which SQLite stores, so run this on PostgreSQL too. Every
answer must be a page (a form error, a refusal, a redirect), never a 5xx.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.portal.conftest import PASSWORD, client_for

NUL = "a\x00b"
LONG = "x" * 100_000
HUGE = "a" * (3 * 1024 * 1024)


def _forms(world) -> list[tuple[str, str, dict]]:
    """(who, url, a valid body) for every POST form of the portal and the sign-in pages."""
    agent, grant = world["agent"], world["grant"]
    return [
        ("anonymous", reverse("governance:login"), {"username": "alice", "password": PASSWORD}),
        ("anonymous", "/admin/login/", {"username": "alice", "password": PASSWORD}),
        ("admin", reverse("portal:agent_suspend", args=[agent.pk]), {"reason": "stop"}),
        ("admin", reverse("portal:agent_reactivate", args=[agent.pk]), {"reason": "go"}),
        ("admin", reverse("portal:agent_ceiling", args=[agent.pk]), {"capabilities": "", "save": "1"}),
        (
            "admin",
            f"{reverse('portal:grant_new')}?agent={agent.pk}",
            {"user": str(world["member"].pk), "capabilities": str(world["read"].pk), "expiry": "1d"},
        ),
        ("admin", reverse("portal:grant_revoke", args=[grant.pk]), {"reason": "done"}),
        ("member", reverse("portal:my_grant_revoke", args=[grant.pk]), {"confirm": "1"}),
        ("member", reverse("portal:my_agent_revoke", args=[agent.pk]), {"confirm": "1"}),
        ("member", reverse("governance:mfa_enrol"), {"name": "phone", "password": PASSWORD}),
        ("member", reverse("governance:mfa_confirm"), {"token": "123456"}),
        ("member", reverse("governance:mfa_verify"), {"token": "123456"}),
        ("member", reverse("governance:mfa_recovery"), {"password": PASSWORD}),
    ]


def _client(world, who):
    return Client() if who == "anonymous" else client_for(world[who])


def _no_server_error(response, what) -> None:
    assert response.status_code < 500, (what, response.status_code)


@pytest.mark.django_db(transaction=True)
def test_every_portal_form_survives_nul_over_long_values_and_a_3_mb_body(world):
    for who, url, body in _forms(world):
        for field in body:
            for value in (NUL, LONG):
                client = _client(world, who)
                _no_server_error(client.post(url, {**body, field: value}), (url, field, value[:3]))
        _no_server_error(_client(world, who).post(url, {**body, "padding": HUGE}), (url, "3 MB"))
