"""An agent's DPoP requirement: policy files (applied, exported, changed, refused unless boolean), admin."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError
from django.urls import reverse

from audit.models import AuditEvent
from governance.models import Agent, Organization
from governance.policy import export_policy
from tests.governance.test_admin import agent_change_post
from tests.governance.test_policy import clinic, run, write

pytestmark = pytest.mark.django_db


def voice() -> Agent:
    return Agent.objects.get(name="voice-assistant", organization__slug="clinic")


def test_the_requirement_is_applied_exported_and_changed(tmp_path):
    document = clinic()
    document["agents"][0]["dpop_bound_tokens_required"] = True
    run(write(tmp_path, document))
    assert voice().dpop_bound_tokens_required is True
    assert Agent.objects.filter(dpop_bound_tokens_required=True).count() == 1
    created = AuditEvent.objects.get(action="agent.created", agent_id=voice().pk)
    assert json.loads(created.parameters)["dpop_bound_tokens_required"] is True

    exported = export_policy(organizations=[Organization.objects.get(slug="clinic")])
    by_name = {entry["name"]: entry for entry in exported["agents"]}
    assert by_name["voice-assistant"]["dpop_bound_tokens_required"] is True
    assert "dpop_bound_tokens_required" not in by_name["support-assistant"]
    assert run(write(tmp_path, exported, "export.yaml")).strip() == "no changes"

    document["agents"][0]["dpop_bound_tokens_required"] = False
    run(write(tmp_path, document))
    assert voice().dpop_bound_tokens_required is False
    updated = AuditEvent.objects.filter(action="agent.updated", agent_id=voice().pk).latest("seq")
    assert json.loads(updated.parameters)["changes"]["dpop_bound_tokens_required"] == [True, False]


def test_a_non_boolean_requirement_is_refused_with_its_path(tmp_path):
    document = clinic()
    document["agents"][0]["dpop_bound_tokens_required"] = "yes"
    with pytest.raises(CommandError, match=r"agents\[0\]\.dpop_bound_tokens_required: must be true or false"):
        run(write(tmp_path, document))
    assert not Agent.objects.exists()


def test_the_admin_sets_and_clears_the_requirement_through_agent_update(client, admin, agent):
    client.force_login(admin)
    change = reverse("admin:governance_agent_change", args=[agent.pk])
    response = client.post(change, agent_change_post(agent, dpop_bound_tokens_required="on"))
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.dpop_bound_tokens_required is True
    event = AuditEvent.objects.filter(action="agent.updated", agent_id=agent.pk).latest("seq")
    assert json.loads(event.parameters)["changes"]["dpop_bound_tokens_required"] == [False, True]
    assert client.post(change, agent_change_post(agent)).status_code == 302  # an unticked box clears it
    agent.refresh_from_db()
    assert agent.dpop_bound_tokens_required is False
