"""Who may ask (registered tool servers only, 401 otherwise) and what they may send (400 for anything that
is not a decision request, never a 5xx), over HTTP against the live server."""

from __future__ import annotations

import base64
import json

import pytest

from audit.models import AuditEvent
from tests.enforcement.conftest import evaluation, service_token
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/access/v1/evaluation"


@pytest.fixture
def token(issuer, http, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    return service_token(http, issuer, world, agent, key)


def refused_caller(response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Basic realm="gatehouse"'
    error = response.json()["error"]
    assert error["code"] == "invalid_client" and error["message"] and "request_id" in error
    assert not AuditEvent.objects.filter(action__in=["decision.allowed", "decision.denied"]).exists()


def test_no_credentials_is_401(issuer, http, records, token):
    refused_caller(http.post(issuer + PATH, json=evaluation(token)))
    assert AuditEvent.objects.filter(action="decision.caller_refused").exists()


def test_an_agent_is_not_a_tool_server(issuer, http, world, records, token):
    agent, key = world.background_agent()
    assertion = helpers.client_assertion(key, agent.application.client_id, issuer + PATH, lifetime=60)
    refused_caller(
        http.post(issuer + PATH, json=evaluation(token), headers={"Authorization": f"Bearer {assertion}"})
    )


def test_a_wrong_secret_is_refused(issuer, http, world, calendar, token):
    basic = base64.b64encode(f"{world.calendar.application.client_id}:wrong".encode()).decode()
    refused_caller(
        http.post(issuer + PATH, json=evaluation(token), headers={"Authorization": f"Basic {basic}"})
    )


def test_a_secret_tool_server_cannot_use_an_assertion_and_a_key_server_cannot_use_a_secret(
    issuer, http, world, records, calendar, token
):
    # records is private_key_jwt: a Basic header with its client_id and any secret is refused.
    basic = base64.b64encode(f"{world.records.application.client_id}:x".encode()).decode()
    refused_caller(
        http.post(issuer + PATH, json=evaluation(token), headers={"Authorization": f"Basic {basic}"})
    )


@pytest.mark.parametrize(
    "change",
    [
        {"lifetime": 3000},  # longer than five minutes
        {"claims": {"aud": "https://elsewhere.example/"}},
        {"claims": {"iss": "someone"}},
    ],
    ids=["long-lived", "other audience", "other issuer"],
)
def test_a_bad_assertion_is_refused(issuer, http, world, records, token, change):
    assertion = helpers.client_assertion(
        records.key, world.records.application.client_id, issuer + PATH, **change
    )
    refused_caller(
        http.post(issuer + PATH, json=evaluation(token), headers={"Authorization": f"Bearer {assertion}"})
    )


def test_an_assertion_is_single_use(issuer, http, world, records, token):
    assertion = helpers.client_assertion(records.key, world.records.application.client_id, issuer + PATH)
    headers = {"Authorization": f"Bearer {assertion}"}
    assert http.post(issuer + PATH, json=evaluation(token), headers=headers).status_code == 200
    refused_caller_response = http.post(issuer + PATH, json=evaluation(token), headers=headers)
    assert refused_caller_response.status_code == 401


def test_an_assertion_for_the_issuer_is_accepted(issuer, http, world, records, token):
    assertion = helpers.client_assertion(records.key, world.records.application.client_id, issuer)
    response = http.post(
        issuer + PATH, json=evaluation(token), headers={"Authorization": f"Bearer {assertion}"}
    )
    assert response.status_code == 200 and response.json()["decision"] is True


def bad(response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] in ("invalid_request", "request_too_large") and error["message"]
    assert not AuditEvent.objects.filter(action__in=["decision.allowed", "decision.denied"]).exists()
    return error["message"]


def _without(body: dict, *path: str) -> dict:
    body = json.loads(json.dumps(body))
    node = body
    for name in path[:-1]:
        node = node[name]
    del node[path[-1]]
    return body


def _with(body: dict, value, *path: str) -> dict:
    body = json.loads(json.dumps(body))
    node = body
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    return body


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda b: b"", "JSON object"),
        (lambda b: b"not json", "JSON object"),
        (lambda b: b"[1, 2]", "one JSON object"),
        (lambda b: b'{"a": 1, "a": 2}', "repeated"),
        (lambda b: b'{"subject": NaN}', "JSON object"),
        (lambda b: b"\xff\xfe{}", "UTF-8"),
        (lambda b: b"[" * 60_000, "JSON object"),
        (lambda b: b" " * 70_000, "larger"),
        (lambda b: json.dumps({"x": {"y": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}}).encode(), "nested"),
        (lambda b: _without(b, "subject"), "subject"),
        (lambda b: _with(b, "a string", "subject"), "subject"),
        (lambda b: _with(b, "user", "subject", "type"), "subject.type"),
        (lambda b: _without(b, "subject", "properties", "token"), "subject.properties.token"),
        (lambda b: _with(b, 42, "subject", "properties", "token"), "subject.properties.token"),
        (lambda b: _with(b, "x" * 9000, "subject", "properties", "token"), "subject.properties.token"),
        (lambda b: _with(b, ["p"], "subject", "properties", "dpop"), "subject.properties.dpop"),
        (lambda b: _without(b, "action"), "action"),
        (lambda b: _with(b, "Records.Read", "action", "name"), "action.name"),
        (lambda b: _with(b, "records.read_own\n", "action", "name"), "action.name"),
        (lambda b: _with(b, "records.read\x00own", "action", "name"), "action.name"),
        (lambda b: _with(b, "x" * 300, "action", "name"), "action.name"),
        (lambda b: _with(b, [1], "resource"), "resource"),
        (lambda b: _with(b, ["a"], "resource", "properties", "parameters"), "parameters"),
        (lambda b: _with(b, "GET", "context", "http"), "context.http"),
        (lambda b: _with(b, 1, "context", "http", "url"), "context.http.url"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_malformed_bodies_are_400_with_a_clear_error(records, token, make, says):
    body = evaluation(token, http={"method": "POST", "url": "https://records.example.test/mcp"})
    made = make(body)
    payload = made if isinstance(made, bytes) else json.dumps(made).encode()
    assert says in bad(records.post(PATH, payload, headers={"Content-Type": "application/json"}))


def test_a_huge_body_is_refused_unread(records, token):
    body = evaluation(token, parameters={"blob": "x" * 200_000})
    assert "larger" in bad(records.post(PATH, json.dumps(body)))


def test_hostile_parameters_get_a_decision_not_an_error(records, token):
    parameters = {
        "nul": "a\x00b",
        "bidi": "\u202eevil",
        "control": "\x07\x1b[2J",
        "nested": {"deep": [{"x": None}]},
        "big": 2**70,
    }
    answer = records.decide(token, parameters=parameters, tool="t\x00ool")
    assert answer["decision"] is True
    stored = AuditEvent.objects.get(action="decision.allowed").parameters
    assert "\x00" not in stored and "\\u0000" not in stored


@pytest.mark.parametrize(
    "body, says",
    [
        ({"evaluations": []}, "evaluations"),
        ({"evaluations": [1]}, "evaluations[0]"),
        ({"evaluations": [{}] * 33}, "evaluations"),
        ({"evaluations": [{}], "options": {"evaluations_semantic": "first"}}, "evaluations_semantic"),
        ({"evaluations": [{"action": {"name": "records.read_own"}}]}, "evaluations[0].subject"),
    ],
)
def test_malformed_batches_are_400(records, token, body, says):
    assert says in bad(records.post("/access/v1/evaluations", body))
