"""Two parallel refreshes with one refresh token: exactly one wins, the other gets ``invalid_grant`` (never an
empty token, never two ``token.refreshed`` events); over HTTP against a live server, on PostgreSQL."""

from __future__ import annotations

import threading

import httpx
import pytest
from oauth2_provider.models import RefreshToken

from audit.models import AuditEvent
from tests.oauth import helpers
from tests.oauth.test_code_flow import exchange, get_code, refresh, signed_in  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def _parallel_refreshes(issuer, agent, key, refresh_token, n=2) -> list[httpx.Response]:
    answers, start = [], threading.Barrier(n)

    def send():
        with httpx.Client(timeout=30) as http:
            data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
            data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
            start.wait()
            answers.append(http.post(f"{issuer}/oauth/token/", data=data))

    threads = [threading.Thread(target=send) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_parallel_refreshes_with_one_token_let_exactly_one_win(issuer, signed_in, world):  # noqa: F811
    agent, key = world.interactive_agent()
    for attempt in range(4):
        query, verifier = get_code(signed_in, issuer, world, agent)
        first = exchange(signed_in, issuer, agent, key, code=query["code"], verifier=verifier).json()
        before = AuditEvent.objects.filter(action="token.refreshed").count()
        answers = _parallel_refreshes(issuer, agent, key, first["refresh_token"])
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 400], (attempt, [a.text for a in answers])
        won = next(a.json() for a in answers if a.status_code == 200)
        lost = next(a.json() for a in answers if a.status_code == 400)
        assert won["access_token"] and won["refresh_token"], attempt
        assert lost["error"] == "invalid_grant" and "access_token" not in lost
        assert AuditEvent.objects.filter(action="token.refreshed").count() == before + 1, attempt
        refusal = AuditEvent.objects.filter(action="token.refused").latest("pk")
        assert "rotated by a concurrent request" in refusal.parameters
        assert not AuditEvent.objects.filter(action="token.reuse_detected").exists()
        # A lost race is not reuse: the winner's refresh token still works.
        assert RefreshToken.objects.filter(revoked__isnull=True).count() == attempt + 1
        nxt = refresh(signed_in, issuer, agent, key, won["refresh_token"])
        assert nxt.status_code == 200, nxt.text
