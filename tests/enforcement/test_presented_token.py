"""The presented token's one SQL read gives exactly what the ORM form gives (introspection and decisions
both read tokens through it)."""

from __future__ import annotations

import pytest
from django.forms.models import model_to_dict
from oauth2_provider.models import get_access_token_model

from governance.models import TokenRecord
from governance.oauth import issuance_queries
from governance.oauth.tokens import checksum
from tests.enforcement.conftest import service_token, user_token
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)


def orm_form(value: str):
    access_token = (
        get_access_token_model().objects.filter(token_checksum=checksum(value)).only("pk", "expires").first()
    )
    record = (
        TokenRecord.objects.select_related("agent", "user", "tool_server")
        .filter(access_token=access_token)
        .first()
        if access_token is not None
        else None
    )
    return access_token, record


def same(left, right) -> None:
    assert type(left) is type(right)
    if left is None:
        return
    assert model_to_dict(left) == model_to_dict(right)


@pytest.mark.parametrize("kind", ["service", "user"])
def test_the_sql_read_matches_the_orm_read(issuer, http, world, kind):
    if kind == "service":
        agent, key = world.background_agent()
        helpers.grant(agent, world.read)
        token = service_token(http, issuer, world, agent, key)
    else:
        from tests.factories import UserFactory

        alice = UserFactory(organization=world.org, username="alice", attributes={"patient_id": "p-001"})
        agent, key = world.interactive_agent()
        helpers.grant(agent, world.read, alice)
        token = user_token(issuer, world, agent, key, alice)
    sql_token, sql_record = issuance_queries.presented_token(checksum(token))
    orm_token, orm_record = orm_form(token)
    assert (sql_token.pk, sql_token.expires) == (orm_token.pk, orm_token.expires)
    same(sql_record, orm_record)
    for related in ("agent", "user", "tool_server"):
        same(getattr(sql_record, related), getattr(orm_record, related))
    assert issuance_queries.presented_token(checksum(token + "x")) == (None, None)
