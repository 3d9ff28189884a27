import pytest

from governance import selectors
from tests.factories import AgentFactory, GrantFactory, UserFactory


@pytest.fixture
def two_orgs(agent, capability, member, other_org):
    GrantFactory(agent=agent, capability=capability, user=member)
    foreign = AgentFactory(organization=other_org, name="foreign")
    return agent, foreign


def test_admin_sees_only_their_organization(admin, two_orgs):
    mine, foreign = two_orgs
    assert list(selectors.agents_visible_to(admin)) == [mine]
    assert [g.agent for g in selectors.grants_visible_to(admin)] == [mine]


def test_viewer_without_organization_sees_nothing(two_orgs):
    orphan = UserFactory(organization=None, is_staff=True)
    assert not selectors.agents_visible_to(orphan).exists()
    assert not selectors.grants_visible_to(orphan).exists()


def test_superuser_sees_every_organization(two_orgs):
    root = UserFactory(organization=None, is_superuser=True)
    assert set(selectors.agents_visible_to(root)) == set(two_orgs)
