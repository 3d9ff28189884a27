"""RFC 9207: every redirect of the authorization endpoint to the client carries ``iss`` (errors included),
over HTTP against a live server."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.oauth import helpers
from tests.oauth.test_code_flow import signed_in  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def _query(response) -> dict:
    assert response.status_code == 302, (response.status_code, response.text[:300])
    assert response.headers["location"].startswith(helpers.REDIRECT_URI)
    return {k: v for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def _authorize(http, issuer, world, agent, **overrides):
    _, challenge = helpers.pkce_pair()
    args = {
        "client_id": agent.application.client_id,
        "scope": "records.read_own",
        "resource": world.records.audience,
        "challenge": challenge,
        **overrides,
    }
    return helpers.authorize(http, issuer, **args)


def test_every_error_redirect_carries_iss(issuer, signed_in, world):  # noqa: F811
    agent, _ = world.interactive_agent(ceiling=[world.read])
    answers = {
        "invalid_target": _authorize(
            signed_in, issuer, world, agent, resource="https://unknown.example.test/mcp"
        ),
        "invalid_scope": _authorize(
            signed_in, issuer, world, agent, scope="records.read_own records.write_own"
        ),
        "invalid_request": _authorize(signed_in, issuer, world, agent, method="plain"),
    }
    params = {
        "response_type": "token",
        "client_id": agent.application.client_id,
        "redirect_uri": helpers.REDIRECT_URI,
        "scope": "records.read_own",
        "state": "xyz",
        "resource": world.records.audience,
    }
    answers["unsupported_response_type"] = signed_in.get(f"{issuer}/oauth/authorize/?{urlencode(params)}")
    # The person presses Deny: access_denied.
    _, challenge = helpers.pkce_pair()
    params = {**params, "response_type": "code", "code_challenge": challenge, "code_challenge_method": "S256"}
    page = signed_in.get(f"{issuer}/oauth/authorize/?{urlencode(params)}")
    assert page.status_code == 200, page.text[:300]
    parser = helpers._FormParser()
    parser.feed(page.text)
    form = {k: v for k, v in parser.fields.items() if k != "allow"}
    answers["access_denied"] = signed_in.post(
        f"{issuer}/oauth/authorize/?{urlencode(params)}",
        data=form,
        headers={"Referer": f"{issuer}/oauth/authorize/"},
    )
    for error, answer in answers.items():
        query = _query(answer)
        assert query["error"] == [error], (error, query)
        assert query["iss"] == [issuer], (error, query)  # exactly one iss, the issuer byte for byte
        assert query["state"] == ["xyz"], (error, query)


def test_a_success_redirect_carries_exactly_one_iss(issuer, signed_in, world):  # noqa: F811
    agent, _ = world.interactive_agent()
    query = _query(_authorize(signed_in, issuer, world, agent))
    assert query["iss"] == [issuer] and query["code"]
