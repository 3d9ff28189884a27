"""Policy files that configure clients (chosen client ids, public agents, tool servers' credentials) and
users' attributes: applied, re-applied (no change), exported, and refused with their path."""

from __future__ import annotations

import pytest
from django.core.management import CommandError
from jwcrypto import jwk
from oauth2_provider.models import get_application_model

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance import services
from governance.models import Agent, Organization, ToolServer, User
from governance.policy import export_policy
from tests.governance.test_policy import clinic, events_after, head, run, write

pytestmark = pytest.mark.django_db
Application = get_application_model()
TS_KEY = jwk.JWK.generate(kty="EC", crv="P-256", kid="records-ts-2025")


def configured() -> dict:
    document = clinic()
    document["agents"].append(
        {
            "name": "desktop-assistant",
            "kind": "interactive",
            "owner": "dana",
            "client_id": "clinic-desktop-01",
            "token_endpoint_auth_method": "none",
            "redirect_uris": ["http://127.0.0.1:8767/callback"],
            "ceiling": ["records.read_own"],
        }
    )
    document["agents"][0]["client_id"] = "clinic-voice-01"
    document["tool_servers"][0].update(
        client_id="clinic-records-ts",
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [TS_KEY.export_public(as_dict=True)]},
    )
    return document


def test_a_file_configures_client_ids_public_agents_and_tool_server_credentials(tmp_path):
    run(write(tmp_path, configured()))
    voice = Agent.objects.get(name="voice-assistant")
    desktop = Agent.objects.get(name="desktop-assistant")
    records = ToolServer.objects.get(name="Records")
    assert voice.application.client_id == "clinic-voice-01"
    assert (desktop.application.client_id, desktop.token_endpoint_auth_method) == (
        "clinic-desktop-01",
        "none",
    )
    assert desktop.application.client_type == Application.CLIENT_PUBLIC
    assert records.application.client_id == "clinic-records-ts"
    assert [k["kid"] for k in records.jwks["keys"]] == ["records-ts-2025"]
    assert User.objects.get(username="alice").attributes == {"patient_id": "p-001"}
    event = AuditEvent.objects.get(action="tool_server.credentials_set")
    assert (event.actor_type, event.actor_label) == ("system", "policy apply clinic.yaml")

    before = head()
    assert run(write(tmp_path, configured())).strip() == "no changes"
    assert head() == before

    exported = export_policy(organizations=[Organization.objects.get(slug="clinic")])
    servers = {s["name"]: s for s in exported["tool_servers"]}
    agents = {a["name"]: a for a in exported["agents"]}
    assert servers["Records"]["client_id"] == "clinic-records-ts"
    assert servers["Records"]["token_endpoint_auth_method"] == "private_key_jwt"
    assert "client_id" not in servers["Billing"]
    assert agents["desktop-assistant"]["token_endpoint_auth_method"] == "none"
    assert (
        agents["billing-runner"]["client_id"]
        == Agent.objects.get(name="billing-runner").application.client_id
    )
    assert {u["username"]: u.get("attributes") for u in exported["users"]}["bob"] == {"patient_id": "p-002"}
    assert run(write(tmp_path, exported, "export.yaml")).strip() == "no changes"


def test_credentials_left_out_of_the_file_stay_as_they_are(tmp_path):
    run(write(tmp_path, clinic()))
    records = ToolServer.objects.get(name="Records")
    services.tool_server_set_credentials(
        actor=SYSTEM, tool_server=records, token_endpoint_auth_method="client_secret_basic"
    )
    secret = services.tool_server_issue_secret(actor=SYSTEM, tool_server=records)
    assert run(write(tmp_path, clinic())).strip() == "no changes"
    records.refresh_from_db()
    assert records.token_endpoint_auth_method == "client_secret_basic"
    assert records.application.client_secret != secret  # hashed, and still the one issued
    assert records.application.client_id not in str(export_policy()["grants"])


def test_a_changed_client_id_and_attribute_are_updated_through_the_services(tmp_path):
    run(write(tmp_path, configured()))
    document = configured()
    document["agents"][0]["client_id"] = "clinic-voice-02"
    document["users"][4]["attributes"] = {"patient_id": "p-001", "ward": 4}
    before = head()
    run(write(tmp_path, document))
    assert Agent.objects.get(name="voice-assistant").application.client_id == "clinic-voice-02"
    assert User.objects.get(username="alice").attributes == {"patient_id": "p-001", "ward": 4}
    actions = [e.action for e in events_after(before)]
    assert actions == ["user.updated", "agent.updated", "policy.applied"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["agents"][1].update(client_id="clinic-records-ts"),
            "tool_servers[0]: repeats the client_id of agents[1]",
        ),
        (
            lambda d: d["agents"][1].update(token_endpoint_auth_method="client_secret_basic"),
            "agents[1].token_endpoint_auth_method: a policy file does not switch agents to or from a secret",
        ),
        (
            lambda d: d["agents"].append(
                {
                    "name": "new",
                    "kind": "interactive",
                    "owner": "dana",
                    "token_endpoint_auth_method": "client_secret_post",
                }
            ),
            "agents[4].token_endpoint_auth_method: a policy file does not create agents",
        ),
        (
            lambda d: d["users"][4].update(attributes={"patient_id": "p\u202e1"}),
            "users[4].attributes.patient_id: contains bidirectional formatting characters",
        ),
        (
            lambda d: d["tool_servers"][0].update(client_id="clinic\x00records"),
            "tool_servers[0].client_id: contains control characters",
        ),
    ],
)
def test_refused_with_the_path_and_nothing_written(tmp_path, mutate, expected):
    run(write(tmp_path, configured()))
    document = configured()
    mutate(document)
    before = head()
    with pytest.raises(CommandError) as refused:
        run(write(tmp_path, document))
    assert expected in str(refused.value)
    assert [e.action for e in events_after(before)] == ["policy.refused"]


def test_a_client_id_held_by_a_client_outside_the_file_is_refused(tmp_path):
    run(write(tmp_path, clinic()))
    records = ToolServer.objects.get(name="Records")
    services.tool_server_set_credentials(
        actor=SYSTEM,
        tool_server=records,
        token_endpoint_auth_method="client_secret_post",
        client_id="taken-0001",
    )
    document = clinic()
    document["agents"][0]["client_id"] = "taken-0001"
    with pytest.raises(CommandError, match=r"agents\[0\]\.client_id: taken-0001 is already another client"):
        run(write(tmp_path, document))
    assert Agent.objects.get(name="voice-assistant").application.client_id != "taken-0001"
