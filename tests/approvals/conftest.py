"""A clinic where an agent may cancel appointments for a patient once approvers agree."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core import mail

from approvals import services
from approvals.models import ActionRequest
from governance.models import Agent, Capability, Grant, Role, User
from tests.factories import (
    AdminFactory,
    CapabilityFactory,
    OrganizationFactory,
    ToolServerFactory,
    UserFactory,
)
from tests.oauth import helpers

SECRET = "s3cret-" + "x" * 40


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


@dataclass
class Clinic:
    org: object
    admin: User
    admin2: User
    ravi: User
    mei: User
    ali: User
    pat: User
    cancel: Capability
    agent: Agent
    grant: Grant

    def details(self, **extra) -> list[dict]:
        return [{"type": "appointments.cancel", "appointment_id": "A-1", **extra}]

    def ask(self, **kwargs) -> ActionRequest:
        values = {
            "actor": self.agent,
            "capability": self.cancel,
            "on_behalf_of": self.pat,
            "authorization_details": self.details(),
            "binding_message": "Cancel Tuesday 10:00",
        } | kwargs
        return services.action_request_create(**values)


@pytest.fixture
def clinic(db, settings) -> Clinic:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    org = OrganizationFactory(slug="clinic", name="Clinic")
    admin = AdminFactory(organization=org, username="admin")
    admin2 = AdminFactory(organization=org, username="admin2")
    ravi = UserFactory(organization=org, username="ravi", role=Role.APPROVER)
    mei = UserFactory(organization=org, username="mei", role=Role.APPROVER)
    ali = UserFactory(organization=org, username="ali", role=Role.APPROVER)
    pat = UserFactory(organization=org, username="pat")
    server = ToolServerFactory(organization=org, name="Records", audience="https://records.example.test/mcp")
    cancel = CapabilityFactory(
        tool_server=server,
        key="appointments.cancel",
        risk_level="high",
        requires_approval=True,
        approvals_required=2,
        description="Cancel one of the patient's appointments.",
    )
    agent, _ = helpers.make_agent(
        organization=org,
        owner=admin,
        ceiling=[cancel],
        auth_method="client_secret_basic",
        client_secret=SECRET,
    )
    grant = helpers.grant(agent, cancel, pat)
    mail.outbox = []
    return Clinic(org, admin, admin2, ravi, mei, ali, pat, cancel, agent, grant)
