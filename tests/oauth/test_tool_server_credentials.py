"""A tool server's credentials, set through the services, used over HTTP at introspection."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance import services
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)


def issue(http, issuer, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    data = {
        "grant_type": "client_credentials",
        "scope": "records.read_own",
        "resource": world.records.audience,
    }
    data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
    response = http.post(f"{issuer}/oauth/token/", data=data)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def introspect_with_key(http, issuer, client_id, key, token):
    data = {"token": token, **helpers.assertion_params(key, client_id, f"{issuer}/oauth/introspect/")}
    return http.post(f"{issuer}/oauth/introspect/", data=data)


def introspect_with_secret(http, issuer, client_id, secret, token, *, basic=True):
    if basic:
        return http.post(f"{issuer}/oauth/introspect/", data={"token": token}, auth=(client_id, secret))
    body = {"token": token, "client_id": client_id, "client_secret": secret}
    return http.post(f"{issuer}/oauth/introspect/", data=body)


def everything_audited() -> str:
    return " ".join(AuditEvent.objects.values_list("parameters", flat=True))


def test_a_key_set_through_the_service_authenticates_at_introspection(issuer, http, world):
    key = helpers.new_key()
    services.tool_server_set_credentials(
        actor=world.admin,
        tool_server=world.records,
        token_endpoint_auth_method="private_key_jwt",
        jwks=helpers.public_jwks(key),
        client_id="records-tool-server",
    )
    token = issue(http, issuer, world)
    response = introspect_with_key(http, issuer, "records-tool-server", key, token)
    assert response.status_code == 200 and response.json()["active"] is True

    stranger = helpers.new_key()
    refused = introspect_with_key(http, issuer, "records-tool-server", stranger, token)
    assert refused.status_code == 401
    event = AuditEvent.objects.get(action="tool_server.credentials_set")
    assert (event.actor_id, event.target_id) == (str(world.admin.pk), str(world.records.pk))
    assert key.export_public(as_dict=True)["x"] not in event.parameters


def test_a_secret_is_issued_once_works_and_is_never_stored_or_audited(issuer, http, world):
    out = io.StringIO()
    arguments = ["--organization", "clinic", "--name", "Records", "--method", "client_secret_basic"]
    call_command("tool_server_secret", *arguments, stdout=out, stderr=io.StringIO())
    secret = out.getvalue().strip()
    world.records.refresh_from_db()
    client_id = world.records.application.client_id
    assert len(secret) >= 40 and world.records.application.client_secret != secret  # stored hashed
    token = issue(http, issuer, world)
    assert introspect_with_secret(http, issuer, client_id, secret, token).json()["active"] is True
    # The method is the one configured: the same secret in the form body is refused.
    assert introspect_with_secret(http, issuer, client_id, secret, token, basic=False).status_code == 401
    assert secret not in everything_audited()
    actions = list(
        AuditEvent.objects.filter(action__startswith="tool_server.")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["tool_server.credentials_set", "tool_server.secret_issued"]

    newer = services.tool_server_issue_secret(actor=SYSTEM, tool_server=world.records)
    assert introspect_with_secret(http, issuer, client_id, secret, token).status_code == 401
    assert introspect_with_secret(http, issuer, client_id, newer, token).json()["active"] is True

    # Back to a key: the secret stops working at once, and does not come back with the method.
    key = helpers.new_key()
    services.tool_server_set_credentials(
        actor=SYSTEM, tool_server=world.records, token_endpoint_auth_method="private_key_jwt",
        jwks=helpers.public_jwks(key),
    )  # fmt: skip
    assert introspect_with_secret(http, issuer, client_id, newer, token).status_code == 401
    services.tool_server_set_credentials(
        actor=SYSTEM, tool_server=world.records, token_endpoint_auth_method="client_secret_basic"
    )
    assert introspect_with_secret(http, issuer, client_id, newer, token).status_code == 401
    assert introspect_with_key(http, issuer, client_id, key, token).status_code == 401
