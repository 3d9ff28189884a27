"""Fixtures for the broker end-to-end tests: a live server whose issuer is its own URL, and a world."""

from __future__ import annotations

import httpx
import pytest
from django.utils import timezone

from governance.models import Grant
from tests.factories import (
    AdminFactory,
    CapabilityFactory,
    OrganizationFactory,
    ToolServerFactory,
    UserFactory,
)
from tests.oauth import helpers


@pytest.fixture
def issuer(live_server, settings) -> str:
    settings.GATEHOUSE_ISSUER = live_server.url
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": live_server.url}
    return live_server.url


@pytest.fixture
def http():
    with httpx.Client(follow_redirects=False, timeout=20) as client:
        yield client


class World:
    """An organization with two tool servers, capabilities on each, an admin and a member."""

    def __init__(self):
        self.org = OrganizationFactory(slug="clinic", name="Clinic")
        self.admin = AdminFactory(organization=self.org, username="admin")
        self.member = UserFactory(organization=self.org, username="pat")
        self.records = ToolServerFactory(
            organization=self.org, name="Records", audience="https://records.example.test/mcp"
        )
        self.calendar = ToolServerFactory(
            organization=self.org, name="Calendar", audience="https://calendar.example.test/mcp"
        )
        self.read = CapabilityFactory(
            tool_server=self.records, key="records.read_own", max_token_lifetime=300
        )
        self.write = CapabilityFactory(
            tool_server=self.records, key="records.write_own", max_token_lifetime=300
        )
        self.book = CapabilityFactory(tool_server=self.calendar, key="calendar.book", max_token_lifetime=300)

    def background_agent(self, **kwargs):
        kwargs.setdefault("ceiling", [self.read, self.write])
        return helpers.make_agent(organization=self.org, owner=self.admin, kind="background", **kwargs)

    def interactive_agent(self, **kwargs):
        kwargs.setdefault("ceiling", [self.read, self.write, self.book])
        return helpers.make_agent(organization=self.org, owner=self.admin, kind="interactive", **kwargs)

    def tool_server_key(self, tool_server):
        return helpers.make_tool_server_client(tool_server, owner=self.admin)


@pytest.fixture
def world(transactional_db):
    yield World()
    # The SQLite integrity triggers refuse to empty a ceiling that open grants use, which is what the
    # transactional test's flush does; close the grants first.
    Grant.objects.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
