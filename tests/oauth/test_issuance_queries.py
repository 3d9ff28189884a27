"""The token endpoint's two reads, written as SQL, give what the ORM forms give: same rows, same objects."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from oauth2_provider.models import get_application_model

from governance.models import Agent, Grant, ToolServer
from governance.oauth import issuance_queries
from tests.factories import CapabilityFactory, OrganizationFactory, ToolServerFactory, UserFactory
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)


def values(obj) -> dict:
    return {field.attname: getattr(obj, field.attname) for field in obj._meta.concrete_fields}


def orm_client(client_id: str):
    return (
        get_application_model()
        .objects.select_related("agent", "tool_server")
        .filter(client_id=client_id)
        .first()
    )


def test_load_client_matches_the_orm_for_agents_tool_servers_and_bare_applications(
    world, django_assert_num_queries
):
    agent, _ = world.background_agent()
    world.tool_server_key(world.records)
    bare = get_application_model().objects.create(
        name="bare",
        user=world.admin,
        client_type="confidential",
        authorization_grant_type="client-credentials",
    )
    world.records.refresh_from_db()
    for application in (agent.application, world.records.application, bare):
        expected = orm_client(application.client_id)
        with django_assert_num_queries(1):
            got = issuance_queries.load_client(application.client_id)
        assert values(got) == values(expected)
        assert not got._state.adding and got._state.db == "default"
        with django_assert_num_queries(0):  # the principal came with the application
            for accessor, model in (("agent", Agent), ("tool_server", ToolServer)):
                try:
                    want = getattr(expected, accessor)
                except model.DoesNotExist:
                    with pytest.raises(model.DoesNotExist):
                        getattr(got, accessor)
                    continue
                principal = getattr(got, accessor)
                assert values(principal) == values(want)
                assert principal.application is got
    loaded = issuance_queries.load_client(agent.application.client_id).agent
    assert loaded.jwks == agent.jwks and isinstance(loaded.jwks, dict)  # JSON decoded as the ORM does
    assert loaded.created_at == Agent.objects.get(pk=agent.pk).created_at and loaded.created_at.tzinfo


def test_load_client_reads_the_agent_status_fresh(world):
    agent, _ = world.background_agent()
    assert issuance_queries.load_client(agent.application.client_id).agent.is_active
    Agent.objects.filter(pk=agent.pk).update(status="suspended")
    assert issuance_queries.load_client(agent.application.client_id).agent.status == "suspended"


def test_load_client_unknown_client_is_none(world):
    world.background_agent()
    assert issuance_queries.load_client("no-such-client") is None
    assert issuance_queries.load_client("' OR '1'='1") is None  # a parameter, never SQL


def orm_grants(agent, user, keys, now, audience):
    return list(
        Grant.objects.active(at=now)
        .filter(
            agent=agent,
            user=user,
            capability__key__in=keys,
            capability__tool_server__audience=audience,
            capability__tool_server__organization_id=agent.organization_id,
        )
        .filter(capability__agents_allowed=agent)
        .select_related("capability__tool_server")
    )


def assert_same_grants(agent, user, keys, now, audience, django_assert_num_queries):
    expected = orm_grants(agent, user, keys, now, audience)
    with django_assert_num_queries(1 if keys else 0):
        got = issuance_queries.covering_grants_on_audience(
            agent=agent, user=user, keys=keys, now=now, audience=audience
        )
    assert [values(g) for g in got] == [values(g) for g in expected], (user, keys, audience)
    with django_assert_num_queries(0):  # capability and tool server came with the grant
        for grant, want in zip(got, expected, strict=True):
            assert values(grant.capability) == values(want.capability)
            assert values(grant.capability.tool_server) == values(want.capability.tool_server)
    return got


def test_covering_grants_match_the_orm_for_every_grant_state(world, django_assert_num_queries):
    agent, _ = world.background_agent(ceiling=[world.read, world.write, world.book])
    now = timezone.now()
    read = helpers.grant(agent, world.read)  # open-ended
    write = helpers.grant(agent, world.write, expires_at=now + timedelta(minutes=2))
    book = helpers.grant(agent, world.book)
    other = OrganizationFactory(slug="elsewhere", name="Elsewhere")
    foreign = ToolServerFactory(organization=other, name="Theirs", audience="https://theirs.example.test/mcp")
    CapabilityFactory(tool_server=foreign, key="records.read_own")
    everything = ["records.read_own", "records.write_own", "calendar.book", "nothing.here"]
    audiences = [world.records.audience, world.calendar.audience, foreign.audience, "https://unknown.test/x"]

    def check_all():
        for audience in audiences:
            for keys in (everything, ["records.read_own"], ["records.write_own"], []):
                assert_same_grants(agent, None, keys, now, audience, django_assert_num_queries)

    check_all()
    got = assert_same_grants(agent, None, everything, now, world.records.audience, django_assert_num_queries)
    assert {g.pk for g in got} == {read.pk, write.pk}
    assert [g.pk for g in got] == [write.pk, read.pk]  # newest first, as Grant's ordering says
    # Expiry is compared with the time given: just before, at, and after the moment it lapses.
    for moment, covered in ((write.expires_at - timedelta(microseconds=1), True), (write.expires_at, False)):
        got = issuance_queries.covering_grants_on_audience(
            agent=agent, user=None, keys=["records.write_own"], now=moment, audience=world.records.audience
        )
        assert [g.pk for g in got] == ([write.pk] if covered else [])
        assert_same_grants(
            agent, None, ["records.write_own"], moment, world.records.audience, django_assert_num_queries
        )
    Grant.objects.filter(pk=write.pk).update(expires_at=now - timedelta(seconds=1))
    Grant.objects.filter(pk=book.pk).update(revoked_at=timezone.now())
    check_all()
    got = issuance_queries.covering_grants_on_audience(
        agent=agent, user=None, keys=everything, now=now, audience=world.calendar.audience
    )
    assert got == []  # revoked
    # Another agent's grants never count.
    second, _ = world.background_agent()
    helpers.grant(second, world.write)
    assert_same_grants(agent, None, everything, now, world.records.audience, django_assert_num_queries)
    assert [
        g.pk
        for g in issuance_queries.covering_grants_on_audience(
            agent=agent, user=None, keys=["records.write_own"], now=now, audience=world.records.audience
        )
    ] == []


def test_covering_grants_match_the_orm_for_users_and_the_ceiling(world, django_assert_num_queries):
    agent, _ = world.interactive_agent(ceiling=[world.read, world.write])
    other_user = UserFactory(organization=world.org, username="sam")
    now = timezone.now()
    mine = helpers.grant(agent, world.read, world.member)
    helpers.grant(agent, world.write, other_user)
    keys = ["records.read_own", "records.write_own"]
    for user in (world.member, other_user, None):
        assert_same_grants(agent, user, keys, now, world.records.audience, django_assert_num_queries)
    got = issuance_queries.covering_grants_on_audience(
        agent=agent, user=world.member, keys=keys, now=now, audience=world.records.audience
    )
    assert [g.pk for g in got] == [mine.pk]
    assert (
        issuance_queries.covering_grants_on_audience(  # a user's grant is not a service grant
            agent=agent, user=None, keys=keys, now=now, audience=world.records.audience
        )
        == []
    )
    # The ceiling join is this agent's entry only: other agents holding the same capability in their
    # ceilings neither duplicate rows nor lend a grant.  (An open grant outside its agent's ceiling is
    # refused by the database's triggers, so it cannot be set up here.)
    for _ in range(2):
        world.interactive_agent(ceiling=[world.read, world.write])
    got = assert_same_grants(
        agent, world.member, keys, now, world.records.audience, django_assert_num_queries
    )
    assert [g.pk for g in got] == [mine.pk]
    narrow, _ = world.interactive_agent(ceiling=[world.write])
    assert_same_grants(narrow, world.member, keys, now, world.records.audience, django_assert_num_queries)
    assert (
        issuance_queries.covering_grants_on_audience(
            agent=narrow, user=world.member, keys=keys, now=now, audience=world.records.audience
        )
        == []
    )


def test_a_client_id_with_a_nul_byte_is_unknown_without_a_query(world, django_assert_num_queries):
    world.background_agent()
    with django_assert_num_queries(0):  # PostgreSQL would refuse the parameter; no client can have it
        assert issuance_queries.load_client("abc\x00def") is None


def test_insert_stores_what_save_stores(world, django_assert_num_queries):
    from oauth2_provider.models import get_access_token_model

    from governance.models import TokenRecord

    agent, _ = world.background_agent()
    now = timezone.now()

    def record(number: int) -> TokenRecord:
        access = get_access_token_model().objects.create(
            token=f"token-{number}", application=agent.application, expires=now, scope="records.read_own"
        )
        return TokenRecord(
            access_token=access,
            jti=f"jti-{number}",
            audience=world.records.audience,
            tool_server=world.records,
            agent=agent,
            user=world.member,
            subject="subject",
            client_id=agent.application.client_id,
            capabilities="records.read_own",
            grant_type="client_credentials",
            token_family=uuid.UUID(int=number),
            act={"sub": "x", "act": {"sub": "y"}},
            cnf_jkt="jkt",
            acr="aal2",
            auth_time=now - timedelta(minutes=1),
            issued_at=now,
            expires_at=now + timedelta(minutes=5),
        )

    saved, inserted = record(1), record(2)
    saved.save()
    with django_assert_num_queries(1):
        issuance_queries.insert(inserted)
    assert inserted.pk is not None and inserted.pk != saved.pk and not inserted._state.adding
    stored = {r.pk: values(r) for r in TokenRecord.objects.filter(pk__in=[saved.pk, inserted.pk])}
    differ = {"id", "access_token_id", "jti", "token_family"}
    want = {k: v for k, v in stored[saved.pk].items() if k not in differ}
    assert {k: v for k, v in stored[inserted.pk].items() if k not in differ} == want
    assert stored[inserted.pk]["token_family"] == uuid.UUID(int=2)
    assert stored[inserted.pk]["access_token_id"] == inserted.access_token_id
    assert values(inserted) == stored[inserted.pk]
