"""Writes that used to happen outside the services: the demo admin and initial access tokens."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance import services
from governance.errors import InvalidInput, InvalidState, NotPermitted
from governance.models import InitialAccessToken, User

pytestmark = pytest.mark.django_db


def demo_admin() -> str:
    out = io.StringIO()
    call_command("demo_admin", "--organization", "clinic", stdout=out)
    return out.getvalue().split("password: ")[1].strip()


def test_demo_admin_is_created_then_reset_through_its_service(settings, org):
    settings.DEBUG = True
    first = demo_admin()
    user = User.objects.get(username="demo-admin")
    assert (user.organization, user.role, user.is_superuser, user.is_staff) == (org, "admin", True, True)
    assert user.check_password(first)
    second = demo_admin()
    user.refresh_from_db()
    assert user.check_password(second) and not user.check_password(first)
    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.action for e in events] == ["user.created", "user.updated"]
    assert {(e.actor_type, e.actor_label) for e in events} == {("system", "demo_admin command")}
    assert all(first not in e.parameters and second not in e.parameters for e in events)


def test_demo_admin_is_refused_outside_debug(settings, org):
    settings.DEBUG = False
    with pytest.raises(CommandError):
        demo_admin()
    with pytest.raises(InvalidState):
        services.demo_admin_ensure(actor=SYSTEM, organization=org, username="demo-admin", password="x" * 20)
    assert not User.objects.filter(username="demo-admin").exists()
    assert not AuditEvent.objects.exists()


def test_initial_access_token_is_audited_by_its_service_with_the_acting_admin(admin, org, capability):
    value, token = services.initial_access_token_create(
        actor=admin, organization=org, ceiling=[capability.key], label="ci"
    )
    event = AuditEvent.objects.get(action="initial_access_token.created")
    assert (event.actor_type, event.actor_id, event.target_id) == ("user", str(admin.pk), str(token.pk))
    assert token.created_by == admin
    assert value not in event.parameters and token.token_hash not in event.parameters


def test_initial_access_token_for_another_organization_is_refused(other_org, admin):
    with pytest.raises(NotPermitted):
        services.initial_access_token_create(actor=admin, organization=other_org, ceiling=[])
    assert not InitialAccessToken.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize("label", ["ci\x00", "ci\u202e", "x" * 201])
def test_initial_access_token_label_is_checked_like_a_name(admin, org, label):
    with pytest.raises(InvalidInput):
        services.initial_access_token_create(actor=admin, organization=org, ceiling=[], label=label)
    assert not InitialAccessToken.objects.exists() and not AuditEvent.objects.exists()


def test_tool_server_secret_command_refusals(org, tool_server):
    with pytest.raises(CommandError, match="No such tool server"):
        call_command("tool_server_secret", "--organization", org.slug, "--name", "Nope", stdout=io.StringIO())
    with pytest.raises(InvalidState):  # no secret method configured: nothing issued
        call_command(
            "tool_server_secret", "--organization", org.slug, "--name", tool_server.name, stdout=io.StringIO()
        )
    assert not AuditEvent.objects.exists()
