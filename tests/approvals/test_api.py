"""The agents' JSON API: client authentication as at the token endpoint, one error shape, no 5xx."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import pytest
from django.test import Client

from approvals.models import ActionRequest
from audit.actions import Action
from audit.models import AuditEvent
from tests.approvals.conftest import SECRET
from tests.oauth import helpers

URL = "/api/approvals/requests/"
FORM = "application/x-www-form-urlencoded"


def basic(agent, secret: str = SECRET) -> dict:
    raw = f"{agent.application.client_id}:{secret}".encode()
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(raw).decode()}


def body(clinic, **extra) -> dict:
    return {
        "capability": "appointments.cancel",
        "login_hint": "pat",
        "authorization_details": clinic.details(),
        "binding_message": "Cancel Tuesday",
    } | extra


def post(payload, headers, *, url: str = URL, content_type="application/json"):
    data = json.dumps(payload) if content_type == "application/json" else payload
    return Client().post(url, data, content_type=content_type, **headers)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and "request_id" in error
    return error


# --- refusals -----------------------------------------------------------


def test_no_or_wrong_client_credentials_are_refused(clinic):
    assert_error(post(body(clinic), {}), 401, "invalid_client")
    assert_error(post(body(clinic), basic(clinic.agent, "wrong")), 401, "invalid_client")
    assert not ActionRequest.objects.exists()
    assert AuditEvent.objects.filter(action=Action.APPROVAL_REFUSED).count() == 2


def test_a_user_without_a_grant_and_an_unknown_user_look_the_same(clinic):
    a = assert_error(post(body(clinic, login_hint="ravi"), basic(clinic.agent)), 403, "not_permitted")
    b = assert_error(post(body(clinic, login_hint="nobody"), basic(clinic.agent)), 403, "not_permitted")
    assert a["message"] == b["message"]


@pytest.mark.parametrize(
    "change",
    [
        {"authorization_details": [{"type": "appointments.cancel", "x": "a\u0000b"}]},
        {"authorization_details": [{"type": "appointments.cancel", "x": "\u202e"}]},
        {"authorization_details": '[{"type": "appointments.cancel", "x": NaN}]'},
        {"authorization_details": "not json"},
        {"authorization_details": [{"type": "appointments.cancel", "x": "y" * 5000}]},
        {"authorization_details": {"type": "appointments.cancel"}},
        {"binding_message": "a\u0000b"},
        {"binding_message": "x" * 2000},
        {"capability": "nope.nope"},
        {"capability": "a\u0000b"},
        {"login_hint": "p\u0000t"},
        {"requested_expiry": -1},
        {"requested_expiry": "soon"},
    ],
)
def test_hostile_input_gets_a_400_in_the_one_error_shape(clinic, change):
    response = post(body(clinic, **change), basic(clinic.agent))
    assert response.status_code in (400, 403), response.content
    assert set(response.json()["error"]) >= {"code", "message", "request_id"}
    assert not ActionRequest.objects.exists()


def test_a_huge_body_is_refused_before_it_is_read(clinic):
    response = post(body(clinic, padding="x" * 100_000), basic(clinic.agent))
    assert_error(response, 413, "too_large")


def test_a_json_array_body_is_refused(clinic):
    assert_error(post([1, 2], basic(clinic.agent)), 400, "invalid_input")


def test_another_agent_cannot_read_the_request(clinic):
    created = post(body(clinic), basic(clinic.agent)).json()
    other, _ = helpers.make_agent(
        organization=clinic.org,
        owner=clinic.admin,
        ceiling=[clinic.cancel],
        auth_method="client_secret_basic",
        client_secret=SECRET,
    )
    response = Client().get(f"{URL}{created['id']}/", **basic(other))
    assert_error(response, 404, "not_found")


# --- what works -----------------------------------------------------------


def test_an_agent_creates_a_request_and_reads_its_status(clinic):
    response = post(body(clinic), basic(clinic.agent))
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["status"] == "pending" and created["approvals_needed"] == 2
    assert created["authorization_details"] == clinic.details()
    assert created["user"] == "pat"
    status = Client().get(f"{URL}{created['id']}/", **basic(clinic.agent))
    assert status.status_code == 200 and status.json()["id"] == created["id"]


def test_private_key_jwt_in_a_form_body_with_details_as_a_json_string(clinic, settings):
    agent, key = helpers.make_agent(organization=clinic.org, owner=clinic.admin, ceiling=[clinic.cancel])
    helpers.grant(agent, clinic.cancel, clinic.pat)
    form = {
        **helpers.assertion_params(key, agent.application.client_id, settings.GATEHOUSE_ISSUER),
        "capability": "appointments.cancel",
        "login_hint": "pat",
        "authorization_details": json.dumps(clinic.details()),
    }
    response = Client().post(URL, urlencode(form), content_type=FORM)
    assert response.status_code == 201, response.content
    again = helpers.assertion_params(key, agent.application.client_id, settings.GATEHOUSE_ISSUER)
    read = Client().post(f"{URL}{response.json()['id']}/", urlencode(again), content_type=FORM)
    assert read.status_code == 200 and read.json()["status"] == "pending"
    # The same assertion twice is a replay.
    replay = helpers.assertion_params(key, agent.application.client_id, settings.GATEHOUSE_ISSUER, jti="once")
    status_url = f"{URL}{response.json()['id']}/"
    assert Client().post(status_url, urlencode(replay), content_type=FORM).status_code == 200
    assert_error(Client().post(status_url, urlencode(replay), content_type=FORM), 401, "invalid_client")
