"""An organization with every role, a hostile agent name, grants and audit events; and a second one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from audit import services as audit
from audit.actions import Action, Result
from governance.models import Role
from tests.factories import (
    AdminFactory,
    AgentFactory,
    CapabilityFactory,
    GrantFactory,
    OrganizationFactory,
    ToolServerFactory,
    UserFactory,
)

PASSWORD = "correct horse battery staple"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """The portal's tests sign in many people; password hashing strength is not what they test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


@pytest.fixture
def world(db):
    org = OrganizationFactory(slug="clinic", name="Clinic")
    people = {
        "admin": AdminFactory(organization=org, username="alice"),
        "approver": UserFactory(organization=org, username="arno", role=Role.APPROVER),
        "member": UserFactory(organization=org, username="pat", role=Role.MEMBER),
        "auditor": UserFactory(organization=org, username="audra", role=Role.AUDITOR),
    }
    server = ToolServerFactory(organization=org, name="Records", audience="https://records.example.test/mcp")
    read = CapabilityFactory(tool_server=server, key="records.read_own", description="Read your own records")
    cancel = CapabilityFactory(
        tool_server=server, key="appointments.cancel", risk_level="high", description=f"Cancel {XSS}"
    )
    export = CapabilityFactory(tool_server=server, key="records.export", risk_level="critical")
    agent = AgentFactory(
        organization=org,
        owner=people["admin"],
        name=f"voice {XSS}",
        description=f"About {XSS}",
        ceiling=[read, cancel, export],
    )
    grant = GrantFactory(
        agent=agent, capability=read, user=people["member"], expires_at=timezone.now() + timedelta(days=2)
    )
    GrantFactory(agent=agent, capability=cancel, user=people["member"])
    with transaction.atomic():
        audit.record(
            action=Action.DECISION_DENIED,
            result=Result.DENIED,
            actor=agent,
            agent=agent,
            on_behalf_of=people["member"],
            organization=org,
            capabilities=["records.export"],
            parameters={"note": XSS},
        )
        audit.record(
            action=Action.ELEVATION_ATTEMPTED,
            result=Result.DENIED,
            actor=agent,
            agent=agent,
            on_behalf_of=people["member"],
            organization=org,
            capabilities=["records.export"],
        )
        audit.record(
            action=Action.DECISION_ALLOWED,
            actor=agent,
            agent=agent,
            on_behalf_of=people["member"],
            organization=org,
            capabilities=["records.read_own"],
        )

    other = OrganizationFactory(slug="elsewhere", name="Elsewhere")
    other_admin = AdminFactory(organization=other, username="oscar")
    other_server = ToolServerFactory(
        organization=other, name="Billing", audience="https://billing.example.test"
    )
    other_cap = CapabilityFactory(tool_server=other_server, key="billing.read")
    other_agent = AgentFactory(
        organization=other, owner=other_admin, name="secret-billing", ceiling=[other_cap]
    )
    other_member = UserFactory(organization=other, username="olga")
    other_grant = GrantFactory(agent=other_agent, capability=other_cap, user=other_member)
    return {
        "org": org,
        **people,
        "server": server,
        "read": read,
        "cancel": cancel,
        "export": export,
        "agent": agent,
        "grant": grant,
        "other_admin": other_admin,
        "other_agent": other_agent,
        "other_grant": other_grant,
        "other_member": other_member,
    }


def client_for(user, *, csrf_checks: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf_checks)
    client.force_login(user)
    return client
