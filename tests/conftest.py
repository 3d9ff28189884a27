import pytest
from django.conf import settings

from audit.services import SYSTEM
from governance.oauth.endpoint import forget_refusal_counts
from governance.oauth.signing_keys import forget_signing_key
from tests.factories import (
    AdminFactory,
    AgentFactory,
    CapabilityFactory,
    OrganizationFactory,
    ToolServerFactory,
    UserFactory,
)

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs PostgreSQL (run with DATABASE_URL=postgres://…, as .ci/run does)")
    for item in items:
        if "postgres" in item.keywords and not ON_POSTGRES:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _forget_cached_signing_key():
    """Each test's database starts without the previous test's keys; so must the per-process key caches."""
    forget_signing_key()
    yield
    forget_signing_key()


@pytest.fixture(autouse=True)
def _fresh_refusal_budget():
    """Each test's unauthenticated refusals are counted from zero (the budget is per address and minute)."""
    forget_refusal_counts()


@pytest.fixture
def system():
    return SYSTEM


@pytest.fixture
def org(db):
    return OrganizationFactory(slug="clinic", name="Clinic")


@pytest.fixture
def other_org(db):
    return OrganizationFactory(slug="elsewhere", name="Elsewhere")


@pytest.fixture
def admin(org):
    return AdminFactory(organization=org, username="admin")


@pytest.fixture
def member(org):
    return UserFactory(organization=org, username="pat")


@pytest.fixture
def tool_server(org):
    return ToolServerFactory(organization=org, name="Records", audience="https://records.example.test/mcp")


@pytest.fixture
def capability(tool_server):
    return CapabilityFactory(tool_server=tool_server, key="records.read_own")


@pytest.fixture
def agent(org, admin, capability):
    return AgentFactory(organization=org, owner=admin, name="voice", ceiling=[capability])


@pytest.fixture
def background_agent(org, admin, capability):
    return AgentFactory(
        organization=org, owner=admin, name="billing", kind="background", ceiling=[capability]
    )
