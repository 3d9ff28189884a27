"""Who a client is: tool servers' credentials, public agents and chosen client ids, and what is refused."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from jwcrypto import jwk
from oauth2_provider.models import get_application_model

from audit.models import AuditEvent
from governance import services
from governance.errors import Conflict, InvalidInput, InvalidState, NotPermitted
from tests.factories import AdminFactory, ToolServerFactory
from tests.governance.step_up_helpers import pass_step_up

pytestmark = pytest.mark.django_db
Application = get_application_model()


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


def public_jwks() -> dict:
    return {"keys": [jwk.JWK.generate(kty="EC", crv="P-256", kid="ts-1").export_public(as_dict=True)]}


def events(action: str) -> int:
    return AuditEvent.objects.filter(action=action).count()


# Tool servers ---


def test_setting_the_same_credentials_twice_writes_once(admin, tool_server):
    keys = public_jwks()
    for _ in range(2):
        services.tool_server_set_credentials(
            actor=admin, tool_server=tool_server, token_endpoint_auth_method="private_key_jwt", jwks=keys
        )
    assert events("tool_server.credentials_set") == 1
    tool_server.refresh_from_db()
    assert tool_server.application.client_type == Application.CLIENT_CONFIDENTIAL
    assert tool_server.application.user is None


BAD_CREDENTIALS = [
    pytest.param({"token_endpoint_auth_method": "none"}, InvalidInput, id="public-tool-server"),
    pytest.param(
        {"token_endpoint_auth_method": "private_key_jwt"}, InvalidInput, id="key-method-without-keys"
    ),
    pytest.param(
        {"token_endpoint_auth_method": "client_secret_basic", "jwks_uri": "https://ts.example/jwks"},
        InvalidInput,
        id="secret-method-with-keys",
    ),
    pytest.param(
        {
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
        },
        InvalidInput,
        id="symmetric-key",
    ),
    pytest.param(
        {"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://10.0.0.1/jwks"},
        InvalidInput,
        id="plain-http-jwks-uri",
    ),
    pytest.param(
        {"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://127.0.0.1:9/jwks"},
        InvalidInput,
        id="loopback-jwks-uri-without-debug",
    ),
    pytest.param(
        {"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://ts.example/jw\x00ks"},
        InvalidInput,
        id="nul-in-jwks-uri",
    ),
    pytest.param(
        {"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://u:p@ts.example/jwks"},
        InvalidInput,
        id="user-info-in-jwks-uri",
    ),
    pytest.param(
        {"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://ts.example/" + "j" * 500},
        InvalidInput,
        id="over-long-jwks-uri",
    ),
]


@pytest.mark.parametrize(("arguments", "error"), BAD_CREDENTIALS)
def test_bad_tool_server_credentials_are_refused_and_nothing_is_written(admin, tool_server, arguments, error):
    with pytest.raises(error):
        services.tool_server_set_credentials(actor=admin, tool_server=tool_server, **arguments)
    tool_server.refresh_from_db()
    assert tool_server.application is None and not Application.objects.exists()
    assert events("tool_server.credentials_set") == 0


def test_an_admin_of_another_organization_cannot_set_credentials(other_org, tool_server):
    stranger = AdminFactory(organization=other_org, username="stranger")
    with pytest.raises(NotPermitted):
        services.tool_server_set_credentials(
            actor=stranger, tool_server=tool_server, token_endpoint_auth_method="client_secret_basic"
        )
    with pytest.raises(NotPermitted):
        services.tool_server_issue_secret(actor=stranger, tool_server=tool_server)


def test_no_secret_for_a_tool_server_that_uses_a_key(admin, tool_server):
    with pytest.raises(InvalidState):
        services.tool_server_issue_secret(actor=admin, tool_server=tool_server)  # no credentials at all
    services.tool_server_set_credentials(
        actor=admin, tool_server=tool_server, token_endpoint_auth_method="private_key_jwt", jwks=public_jwks()
    )
    with pytest.raises(InvalidState):
        services.tool_server_issue_secret(actor=admin, tool_server=tool_server)
    assert events("tool_server.secret_issued") == 0


# Client ids ---

HOSTILE_CLIENT_IDS = [
    pytest.param("short", id="too-short"),
    pytest.param("c" * 101, id="over-long"),
    pytest.param("client\x00id-0001", id="nul"),
    pytest.param("client\u202eid-0001", id="bidi"),
    pytest.param("client id 0001", id="space"),
    pytest.param("client/id/0001", id="slash"),
    pytest.param("-client-id-0001", id="leading-dash"),
    pytest.param("client-id-0001\n", id="trailing-newline"),
]


@pytest.mark.parametrize("client_id", HOSTILE_CLIENT_IDS)
def test_hostile_client_ids_are_refused_everywhere(admin, org, tool_server, client_id):
    with pytest.raises(InvalidInput):
        services.agent_create(
            actor=admin, organization=org, name="cli", kind="interactive", owner=admin, client_id=client_id
        )
    with pytest.raises(InvalidInput):
        services.tool_server_set_credentials(
            actor=admin, tool_server=tool_server, token_endpoint_auth_method="client_secret_post",
            client_id=client_id,
        )  # fmt: skip
    assert not Application.objects.exists()


def test_a_client_id_is_unique_across_agents_and_tool_servers(admin, org, tool_server):
    agent = services.agent_create(
        actor=admin, organization=org, name="cli", kind="interactive", owner=admin, client_id="clinic-cli-01"
    )
    assert agent.application.client_id == "clinic-cli-01"
    with pytest.raises(Conflict):
        services.agent_create(
            actor=admin,
            organization=org,
            name="cli2",
            kind="interactive",
            owner=admin,
            client_id="clinic-cli-01",
        )
    with pytest.raises(Conflict):
        services.tool_server_set_credentials(
            actor=admin, tool_server=tool_server, token_endpoint_auth_method="client_secret_basic",
            client_id="clinic-cli-01",
        )  # fmt: skip
    other = ToolServerFactory(organization=org, name="Other", audience="https://other.example.test/api")
    services.tool_server_set_credentials(
        actor=admin,
        tool_server=other,
        token_endpoint_auth_method="client_secret_basic",
        client_id="other-ts-01",
    )
    with pytest.raises(Conflict):
        services.agent_update(actor=admin, agent=agent, client_id="other-ts-01")
    agent.refresh_from_db()
    assert agent.application.client_id == "clinic-cli-01"


def test_an_agents_client_id_can_be_changed_and_is_audited(admin, org):
    agent = services.agent_create(actor=admin, organization=org, name="cli", kind="interactive", owner=admin)
    generated = agent.application.client_id
    services.agent_update(actor=admin, agent=agent, client_id="clinic-cli-01")
    agent.application.refresh_from_db()
    assert agent.application.client_id == "clinic-cli-01"
    event = AuditEvent.objects.get(action="agent.updated")
    assert event.parameters_dict["changes"] == {"client_id": [generated, "clinic-cli-01"]}


# Public clients ---


def test_a_public_agent_has_a_public_client_and_no_keys(admin, org):
    agent = services.agent_create(
        actor=admin, organization=org, name="desktop", kind="interactive", owner=admin,
        token_endpoint_auth_method="none", redirect_uris=["http://127.0.0.1:8765/callback"],
    )  # fmt: skip
    assert agent.token_endpoint_auth_method == "none"
    assert agent.application.client_type == Application.CLIENT_PUBLIC
    created = AuditEvent.objects.get(action="agent.created")
    assert created.parameters_dict["token_endpoint_auth_method"] == "none"
    with pytest.raises(InvalidInput):
        services.agent_update(actor=admin, agent=agent, jwks=public_jwks())
    agent.refresh_from_db()
    assert agent.jwks == {}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"kind": "background", "token_endpoint_auth_method": "none"}, "Only an interactive agent"),
        ({"kind": "interactive", "token_endpoint_auth_method": "none", "jwks": public_jwks()}, "has no keys"),
        ({"kind": "interactive", "token_endpoint_auth_method": "client_secret_basic"}, "authenticates with"),
        ({"kind": "interactive", "token_endpoint_auth_method": "none\x00"}, "authenticates with"),
    ],
)
def test_public_clients_are_interactive_and_keyless(admin, org, arguments, message):
    with pytest.raises(InvalidInput, match=message):
        services.agent_create(actor=admin, organization=org, name="x", owner=admin, **arguments)
    assert not Application.objects.exists()


def test_switching_an_agent_to_a_public_client_and_back(admin, org):
    agent = services.agent_create(
        actor=admin, organization=org, name="cli", kind="interactive", owner=admin, jwks=public_jwks()
    )
    with pytest.raises(InvalidInput):
        services.agent_update(actor=admin, agent=agent, token_endpoint_auth_method="none")
    assert agent.token_endpoint_auth_method == "private_key_jwt"
    services.agent_update(actor=admin, agent=agent, token_endpoint_auth_method="none", jwks={})
    agent.application.refresh_from_db()
    assert agent.application.client_type == Application.CLIENT_PUBLIC
    services.agent_update(
        actor=admin, agent=agent, token_endpoint_auth_method="private_key_jwt", jwks=public_jwks()
    )
    agent.application.refresh_from_db()
    assert agent.application.client_type == Application.CLIENT_CONFIDENTIAL


# The admin ---


def test_the_admin_sets_credentials_and_issues_a_secret_behind_step_up(client, admin, tool_server):
    client.force_login(admin)
    change = reverse("admin:governance_toolserver_change", args=[tool_server.pk])
    form = {
        "name": tool_server.name,
        "audience": tool_server.audience,
        "description": "",
        "token_endpoint_auth_method": "client_secret_basic",
        "jwks": "",
        "jwks_uri": "",
        "credential_client_id": "records-ts-0001",
    }
    assert client.post(change, form).status_code == 302
    tool_server.refresh_from_db()
    assert tool_server.application.client_id == "records-ts-0001"
    assert AuditEvent.objects.get(action="tool_server.credentials_set").actor_id == str(admin.pk)

    refused = client.post(change, {**form, "jwks": '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'})
    assert refused.status_code == 200 and "c2VjcmV0" not in refused.content.decode()

    changelist = reverse("admin:governance_toolserver_changelist")
    action = {"action": "issue_secret", ACTION_CHECKBOX_NAME: [tool_server.pk]}
    stale = client.post(changelist, {**action, "post": "yes"})
    assert stale.status_code == 302 and events("tool_server.secret_issued") == 0  # sent to verify first

    pass_step_up(client, admin)
    confirm = client.post(changelist, action)
    assert confirm.status_code == 200 and events("tool_server.secret_issued") == 0  # GET-like: asks first
    issued = client.post(changelist, {**action, "post": "yes"})
    assert issued.status_code == 200 and "no-store" in issued["Cache-Control"]
    secret = issued.context["secret"]
    assert secret and secret in issued.content.decode()
    assert events("tool_server.secret_issued") == 1
    tool_server.application.refresh_from_db()
    assert tool_server.application.client_secret != secret


def test_the_admin_creates_a_public_agent_with_a_chosen_client_id(client, admin, org):
    client.force_login(admin)
    data = {
        "organization": org.pk,
        "name": "desktop",
        "kind": "interactive",
        "status": "active",
        "owner": admin.pk,
        "token_endpoint_auth_method": "none",
        "chosen_client_id": "clinic-desktop-01",
        "jwks": "",
        "jwks_uri": "",
        "redirect_uris": "http://127.0.0.1:8765/callback",
        "grants-TOTAL_FORMS": "0",
        "grants-INITIAL_FORMS": "0",
    }
    assert client.post(reverse("admin:governance_agent_add"), data).status_code == 302
    agent = org.agents.get(name="desktop")
    assert (agent.application.client_id, agent.application.client_type) == (
        "clinic-desktop-01",
        Application.CLIENT_PUBLIC,
    )
    taken = client.post(reverse("admin:governance_agent_add"), {**data, "name": "desktop-2"})
    assert taken.status_code == 200 and "another client already uses" in taken.content.decode()
    assert not org.agents.filter(name="desktop-2").exists()
