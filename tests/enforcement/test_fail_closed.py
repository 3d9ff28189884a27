"""Fail closed when the database does not answer: the decision is ``unavailable``, never an exception, and
since the audit log itself cannot be written, the refusal is logged."""

from __future__ import annotations

import logging

import pytest
from django.db import connection

from governance.enforcement import pipeline
from governance.enforcement.checks import Call
from tests.enforcement.conftest import service_token
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_PORT = 18399  # in this helper's port range; nothing listens there


def test_a_database_that_does_not_answer_denies_unavailable_and_logs_it(issuer, http, world, caplog):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    token = service_token(http, issuer, world, agent, key)
    tool_server = world.records
    settings_dict = connection.settings_dict
    saved = {name: value for name, value in settings_dict.items()}
    connection.close()
    if connection.vendor == "postgresql":
        settings_dict["PORT"] = CLOSED_PORT
        settings_dict["OPTIONS"] = {**settings_dict.get("OPTIONS", {}), "connect_timeout": 2}
    else:
        settings_dict["NAME"] = "/nonexistent-directory/gatehouse.sqlite3"
    caplog.set_level(logging.WARNING, logger="governance.enforcement.pipeline")
    try:
        decision = pipeline.decide(Call(token=token, capability_key="records.read_own"), tool_server)
    finally:
        connection.close()
        settings_dict.clear()
        settings_dict.update(saved)
    assert decision.allowed is False
    answer = decision.answer()["context"]
    assert (answer["reason"], answer["check"]) == ("unavailable", "service")
    assert "could not be audited" in caplog.text and token not in caplog.text
    # The database is back: the same call is decided again, and allowed.
    assert pipeline.decide(Call(token=token, capability_key="records.read_own"), tool_server).allowed
