"""The decision API over real HTTP with real tokens from the live server: one test per refusal reason.

Each refusal is checked in the answer (``reason``, ``check``, the extra members) and in the audit log
(exactly one ``decision.denied`` event naming the check), never with the token in either.
"""

from __future__ import annotations

import json
import time

import pytest
from django.utils import timezone
from jwcrypto.common import base64url_decode, base64url_encode

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance import auth_levels
from governance.models import Agent, Grant
from governance.services import agent_suspend, capability_update, grant_revoke, user_deactivate
from tests.enforcement.conftest import TOOL_URL, evaluation, service_token, user_token
from tests.oauth import dpop_client, helpers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent(world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    return agent, key


@pytest.fixture
def token(issuer, http, world, agent):
    return service_token(http, issuer, world, *agent)


def decisions(action: str) -> list[dict]:
    return [json.loads(e.parameters) for e in AuditEvent.objects.filter(action=action).order_by("seq")]


def denied(answer: dict, reason: str, check: str) -> dict:
    """Assert a denial by ``reason`` and its single audit event; return the event's parameters."""
    assert answer["decision"] is False, answer
    context = answer["context"]
    assert (context["reason"], context["check"]) == (reason, check)
    assert context["message"] and context["decision_id"]
    events = [e for e in decisions("decision.denied") if e["decision_id"] == context["decision_id"]]
    assert len(events) == 1
    assert (events[0]["reason"], events[0]["check"]) == (reason, check)
    return events[0]


def test_an_allowed_call_is_one_audit_event_naming_the_decision(records, world, token):
    answer = records.decide(token)
    assert answer == {"decision": True, "context": {"decision_id": answer["context"]["decision_id"]}}
    event = AuditEvent.objects.get(action="decision.allowed")
    assert json.loads(event.parameters)["decision_id"] == answer["context"]["decision_id"]
    assert (event.actor_type, event.actor_id) == ("tool_server", str(world.records.pk))
    assert event.result == "success"
    assert token not in event.parameters and not AuditEvent.objects.filter(action="decision.denied").exists()


def test_a_secret_tool_server_authenticates_with_basic(issuer, http, world, calendar):
    agent, key = world.background_agent(ceiling=[world.book])
    helpers.grant(agent, world.book)
    token = service_token(http, issuer, world, agent, key, "calendar.book", audience=world.calendar.audience)
    assert calendar.decide(token, "calendar.book")["decision"] is True


# --- token -------------------------------------------------------------------------------------------------


def _tamper_signature(token: str) -> str:
    head, body, signature = token.split(".")
    raw = bytearray(base64url_decode(signature))
    raw[5] ^= 0x01
    return f"{head}.{body}.{base64url_encode(bytes(raw))}"


def _tamper_claims(token: str, **claims) -> str:
    head, body, signature = token.split(".")
    payload = {**json.loads(base64url_decode(body)), **claims}
    return f"{head}.{base64url_encode(json.dumps(payload).encode())}.{signature}"


@pytest.mark.parametrize(
    "forge",
    [
        _tamper_signature,
        lambda t: _tamper_claims(t, scope="records.read_own records.write_own"),
        lambda t: "not-a-jwt",
        lambda t: t + "=",
        lambda t: t.split(".")[0] + "." + t.split(".")[1] + ".",
    ],
    ids=["bad signature", "changed claims", "garbage", "padding", "no signature"],
)
def test_a_token_with_a_bad_signature_is_invalid(records, token, forge):
    denied(records.decide(forge(token)), "invalid_token", "token")


def test_a_token_signed_by_another_key_is_invalid(records, token):
    key = helpers.new_key()
    head = json.loads(base64url_decode(token.split(".")[0]))
    payload = json.loads(base64url_decode(token.split(".")[1]))
    from jwcrypto import jwt

    forged = jwt.JWT(header=head, claims=payload)
    forged.make_signed_token(key)
    denied(records.decide(forged.serialize()), "invalid_token", "token")


def test_an_expired_token_is_refused(issuer, http, world, records, agent):
    capability_update(actor=SYSTEM, capability=world.read, max_token_lifetime=1)
    token = service_token(http, issuer, world, *agent)
    time.sleep(2.1)
    denied(records.decide(token), "token_expired", "token")


def test_a_revoked_token_is_refused(issuer, http, records, agent, token):
    agent, key = agent
    data = {"token": token}
    data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/revoke/"))
    assert http.post(f"{issuer}/oauth/revoke/", data=data).status_code == 200
    denied(records.decide(token), "token_revoked", "token")


def test_a_token_for_another_tool_server_is_refused(calendar, token):
    # A token for the records server, presented by the calendar server.
    denied(calendar.decide(token), "wrong_audience", "token")


def test_a_suspended_agents_tokens_are_refused_from_the_next_decision(records, agent, token):
    assert records.decide(token)["decision"] is True
    agent_suspend(actor=SYSTEM, agent=agent[0], reason="kill switch")
    event = denied(records.decide(token), "agent_inactive", "token")
    assert event["agent_status"] == "suspended"


def test_a_suspended_agent_is_refused_even_if_its_token_rows_survive(records, agent, token):
    Agent.objects.filter(pk=agent[0].pk).update(status="suspended")
    denied(records.decide(token), "agent_inactive", "token")


def test_the_subject_id_must_name_the_tokens_agent(records, token):
    body = evaluation(token)
    body["subject"]["id"] = "someone-else"
    answer = records.evaluate(body).json()
    denied(answer, "invalid_token", "token")


# --- DPoP --------------------------------------------------------------------------------------------------


@pytest.fixture
def bound(issuer, http, world, agent):
    key = dpop_client.new_key()
    return service_token(http, issuer, world, *agent, dpop_key=key), key


CALL = {"method": "POST", "url": TOOL_URL}


def test_a_bound_token_with_a_good_proof_is_allowed_once(records, bound):
    token, key = bound
    proof = dpop_client.make_proof("POST", TOOL_URL, key, access_token=token)
    assert records.decide(token, dpop=proof, http=CALL)["decision"] is True
    event = denied(records.decide(token, dpop=proof, http=CALL), "dpop_invalid", "token")
    assert event["why"] == "replay"


def test_a_bound_token_without_a_proof_is_refused(records, bound):
    denied(records.decide(bound[0], http=CALL), "dpop_required", "token")


@pytest.mark.parametrize(
    "case, why",
    [
        ("another key", "key_mismatch"),
        ("wrong ath", "ath"),
        ("wrong htm", "htm"),
        ("wrong htu", "htu"),
        ("no context.http", "context.http is missing"),
    ],
)
def test_a_bad_proof_is_refused(records, bound, case, why):
    token, key = bound
    http = CALL
    if case == "another key":
        proof = dpop_client.make_proof("POST", TOOL_URL, dpop_client.new_key(), access_token=token)
    elif case == "wrong ath":
        proof = dpop_client.make_proof("POST", TOOL_URL, key, access_token=token + "x")
    elif case == "wrong htm":
        proof = dpop_client.make_proof("GET", TOOL_URL, key, access_token=token)
    elif case == "wrong htu":
        proof = dpop_client.make_proof("POST", TOOL_URL + "/other", key, access_token=token)
    else:
        proof, http = dpop_client.make_proof("POST", TOOL_URL, key, access_token=token), None
    event = denied(records.decide(token, dpop=proof, http=http), "dpop_invalid", "token")
    assert event["why"] == why


# --- scope -------------------------------------------------------------------------------------------------


def test_a_capability_not_in_the_token_is_insufficient_scope(records, token):
    answer = records.decide(token, "records.write_own")
    denied(answer, "insufficient_scope", "scope")
    assert answer["context"]["scope"] == "records.write_own"


# --- user --------------------------------------------------------------------------------------------------


def test_a_grant_revoked_after_issue_is_refused_at_once(records, agent, token):
    assert records.decide(token)["decision"] is True
    grant_revoke(actor=SYSTEM, grant=Grant.objects.get(agent=agent[0]), reason="kill switch")
    event = denied(records.decide(token), "grant_inactive", "user")
    assert event["why"] == "grant revoked"


def test_a_grant_that_lapsed_after_issue_is_refused(records, agent, token):
    Grant.objects.filter(agent=agent[0]).update(expires_at=timezone.now())  # rows and token survive
    event = denied(records.decide(token), "grant_inactive", "user")
    assert event["why"] == "no active grant"


@pytest.fixture
def patients(issuer, world):
    """An interactive agent acting for alice and bob; reading a record is constrained to one's own."""
    from tests.factories import UserFactory

    alice = UserFactory(organization=world.org, username="alice", attributes={"patient_id": "p-001"})
    bob = UserFactory(organization=world.org, username="bob", attributes={"patient_id": "p-002"})
    agent, key = world.interactive_agent()
    for user in (alice, bob):
        helpers.grant(agent, world.read, user)
    constraints = {"patient_id": {"equals": "$user.patient_id"}}
    capability_update(actor=SYSTEM, capability=world.read, constraints=constraints)
    return agent, key, alice, bob


def test_the_confused_deputy_alices_token_asking_for_bobs_record_is_refused(issuer, world, records, patients):
    agent, key, alice, bob = patients
    token = user_token(issuer, world, agent, key, alice)
    assert records.decide(token, parameters={"patient_id": "p-001"})["decision"] is True
    answer = records.decide(token, parameters={"patient_id": "p-002"})
    event = denied(answer, "constraint_violated", "user")
    assert (event["parameter"], event["rule"]) == ("patient_id", "equals")
    stored = AuditEvent.objects.get(action="decision.denied")
    assert (stored.on_behalf_of_id, stored.agent_id) == (alice.pk, agent.pk)
    assert "p-002" not in answer["context"]["message"]
    # A missing parameter, another type or a nested object are not ways around the rule.
    for parameters in ({}, {"patient_id": ["p-001"]}, {"patient_id": {"equals": "p-001"}}):
        denied(records.decide(token, parameters=parameters), "constraint_violated", "user")


def test_the_user_id_reference_compares_with_the_tokens_subject(issuer, world, records, patients):
    agent, key, alice, bob = patients
    capability_update(actor=SYSTEM, capability=world.read, constraints={"owner": {"equals": "$user"}})
    token = user_token(issuer, world, agent, key, bob)
    assert records.decide(token, parameters={"owner": str(bob.pk)})["decision"] is True
    denied(records.decide(token, parameters={"owner": str(alice.pk)}), "constraint_violated", "user")


def test_a_deactivated_user_is_refused_from_the_next_decision(issuer, world, records, patients):
    agent, key, alice, _ = patients
    token = user_token(issuer, world, agent, key, alice)
    user_deactivate(actor=SYSTEM, user=alice, reason="left")
    denied(records.decide(token, parameters={"patient_id": str(alice.pk)}), "grant_inactive", "user")


def test_step_up_needed_answers_the_level_and_max_age(world, records, token):
    capability_update(actor=SYSTEM, capability=world.read, requires_step_up=True)
    answer = records.decide(token)
    denied(answer, "step_up_required", "user")
    assert answer["context"]["acr_values"] == auth_levels.ACR_MFA
    assert answer["context"]["max_age"] == auth_levels.step_up_max_age()


def test_approval_needed_is_refused_with_approval_required(world, records, token):
    capability_update(actor=SYSTEM, capability=world.read, requires_approval=True, approvals_required=1)
    denied(records.decide(token), "approval_required", "user")


# --- rate and quota ----------------------------------------------------------------------------------------


def test_the_rate_limit_refuses_the_call_past_it_with_retry_after(world, records, token):
    capability_update(actor=SYSTEM, capability=world.read, rate_limit_per_minute=2)
    assert [records.decide(token)["decision"] for _ in range(2)] == [True, True]
    answer = records.decide(token)
    denied(answer, "rate_limited", "rate")
    assert 1 <= answer["context"]["retry_after"] <= 60


def test_the_daily_quota_refuses_the_call_past_it_with_retry_after(world, records, token):
    capability_update(actor=SYSTEM, capability=world.read, daily_quota=1)
    assert records.decide(token)["decision"] is True
    answer = records.decide(token)
    denied(answer, "quota_exceeded", "rate")
    assert 1 <= answer["context"]["retry_after"] <= 86400


def test_a_refused_call_does_not_use_up_the_limit(world, records, token):
    capability_update(actor=SYSTEM, capability=world.read, rate_limit_per_minute=1)
    records.decide(token, "records.write_own")  # refused by the scope check, before the limits
    assert records.decide(token)["decision"] is True


# --- batch and discovery -----------------------------------------------------------------------------------


def _batch(records, token, semantic=None):
    body = {
        "subject": {"type": "agent", "properties": {"token": token}},
        "resource": {"type": "tool", "id": "read"},
        "evaluations": [
            {"action": {"name": "records.read_own"}},
            {"action": {"name": "records.write_own"}},
            {"action": {"name": "records.read_own"}},
        ],
    }
    if semantic:
        body["options"] = {"evaluations_semantic": semantic}
    response = records.post("/access/v1/evaluations", body)
    assert response.status_code == 200, response.text
    return [item["decision"] for item in response.json()["evaluations"]]


def test_a_batch_answers_each_evaluation_by_its_semantic(records, token):
    assert _batch(records, token) == [True, False, True]
    assert _batch(records, token, "execute_all") == [True, False, True]
    assert _batch(records, token, "deny_on_first_deny") == [True, False]
    assert _batch(records, token, "permit_on_first_permit") == [True]
    assert len(decisions("decision.allowed")) + len(decisions("decision.denied")) == 9


def test_a_batch_with_one_dpop_proof_checks_it_once(records, bound):
    token, key = bound
    proof = dpop_client.make_proof("POST", TOOL_URL, key, access_token=token)
    body = {
        "subject": {"type": "agent", "properties": {"token": token, "dpop": proof}},
        "context": {"http": CALL},
        "evaluations": [{"action": {"name": "records.read_own"}}] * 2,
    }
    answer = records.post("/access/v1/evaluations", body).json()
    assert [item["decision"] for item in answer["evaluations"]] == [True, True]


def test_the_authzen_configuration_names_the_endpoints(issuer, http):
    body = http.get(f"{issuer}/.well-known/authzen-configuration").json()
    assert body == {
        "policy_decision_point": issuer,
        "access_evaluation_endpoint": f"{issuer}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{issuer}/access/v1/evaluations",
    }
