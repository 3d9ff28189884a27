"""User attributes: what capability constraints compare with.  A flat map of safe names to safe values."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from audit.actions import Action
from audit.models import AuditEvent
from governance import services
from governance.errors import InvalidInput
from governance.models import User
from tests.conftest import ON_POSTGRES

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


HOSTILE = [
    pytest.param("not a mapping", "must be a mapping", id="string"),
    pytest.param(["p-001"], "must be a mapping", id="list"),
    pytest.param({"Patient": "p"}, "attribute names", id="uppercase-name"),
    pytest.param({"1st": "p"}, "attribute names", id="digit-first"),
    pytest.param({"patient id": "p"}, "attribute names", id="space-in-name"),
    pytest.param({"patient_id\n": "p"}, "attribute names", id="newline-after-name"),
    pytest.param({"a" * 65: "p"}, "attribute names", id="long-name"),
    pytest.param({"patient\x00id": "p"}, "attribute names", id="nul-in-name"),
    pytest.param({"patient_id": "p\x00001"}, "control characters", id="nul-in-value"),
    pytest.param({"patient_id": "p-001\n"}, "control characters", id="newline-in-value"),
    pytest.param({"patient_id": "p\x1b[31m"}, "control characters", id="escape-in-value"),
    pytest.param({"patient_id": "p\u2028"}, "control characters", id="line-separator"),
    pytest.param({"patient_id": "\ud800"}, "control characters", id="lone-surrogate"),
    pytest.param({"patient_id": "p-\u202e100"}, "bidirectional", id="bidi-override"),
    pytest.param({"patient_id": "\u2066p\u2069"}, "bidirectional", id="bidi-isolate"),
    pytest.param({"patient_id": "x" * 201}, "at most 200", id="over-long-value"),
    pytest.param({"patient_id": ""}, "must not be empty", id="empty-value"),
    pytest.param({"patient_id": True}, "string or a whole number", id="boolean"),
    pytest.param({"patient_id": 1.5}, "string or a whole number", id="float"),
    pytest.param({"patient_id": None}, "string or a whole number", id="null-value"),
    pytest.param({"patient_id": {"id": "p"}}, "string or a whole number", id="nested-object"),
    pytest.param({"patient_id": ["p"]}, "string or a whole number", id="nested-list"),
    pytest.param({"n": 2**53}, "between", id="huge-integer"),
    pytest.param({f"a{i}": "x" for i in range(33)}, "at most 32", id="too-many"),
]


def test_user_create_stores_and_audits_attributes(admin, org):
    user = services.user_create(
        actor=admin, organization=org, username="alice", attributes={"patient_id": "p-001", "ward": 3}
    )
    user.refresh_from_db()
    assert user.attributes == {"patient_id": "p-001", "ward": 3}
    event = AuditEvent.objects.get(action=Action.USER_CREATED)
    assert event.parameters_dict["attributes"] == {"patient_id": "p-001", "ward": 3}


def test_user_without_attributes_has_an_empty_mapping(admin, org):
    user = services.user_create(actor=admin, organization=org, username="alice")
    user.refresh_from_db()
    assert user.attributes == {}


def test_user_update_changes_attributes_with_old_and_new_in_the_event(admin, member):
    services.user_update(actor=admin, user=member, attributes={"patient_id": "p-001"})
    services.user_update(actor=admin, user=member, attributes={"patient_id": "p-002"})
    member.refresh_from_db()
    assert member.attributes == {"patient_id": "p-002"}
    last = AuditEvent.objects.filter(action=Action.USER_UPDATED).order_by("-seq").first()
    changes = last.parameters_dict["changes"]
    assert changes == {"attributes": [{"patient_id": "p-001"}, {"patient_id": "p-002"}]}


def test_same_attributes_again_writes_nothing(admin, member):
    services.user_update(actor=admin, user=member, attributes={"patient_id": "p-001"})
    services.user_update(actor=admin, user=member, attributes={"patient_id": "p-001"})
    assert AuditEvent.objects.filter(action=Action.USER_UPDATED).count() == 1


@pytest.mark.parametrize(("attributes", "message"), HOSTILE)
def test_user_create_refuses_hostile_attributes_and_writes_nothing(admin, org, attributes, message):
    with pytest.raises(InvalidInput) as refused:
        services.user_create(actor=admin, organization=org, username="alice", attributes=attributes)
    assert message in refused.value.message
    assert refused.value.errors["attributes"]
    assert not User.objects.filter(username="alice").exists()
    assert not AuditEvent.objects.filter(action=Action.USER_CREATED).exists()


NOT_EVEN_EMPTY = pytest.param(None, "must be a mapping", id="null")


@pytest.mark.parametrize(("attributes", "message"), [*HOSTILE, NOT_EVEN_EMPTY])
def test_user_update_refuses_hostile_attributes_and_keeps_the_old_ones(admin, member, attributes, message):
    services.user_update(actor=admin, user=member, attributes={"patient_id": "p-001"})
    with pytest.raises(InvalidInput) as refused:
        services.user_update(actor=admin, user=member, attributes=attributes)
    assert message in refused.value.message
    assert member.attributes == {"patient_id": "p-001"}  # the caller's object is put back
    member.refresh_from_db()
    assert member.attributes == {"patient_id": "p-001"}


def test_refusals_never_echo_the_value(admin, org):
    with pytest.raises(InvalidInput) as refused:
        services.user_create(
            actor=admin, organization=org, username="alice", attributes={"patient_id": "<b>\u202eevil"}
        )
    assert "evil" not in refused.value.message


@pytest.mark.parametrize("value", ["[]", '"text"', "42", "null"])
def test_the_database_refuses_attributes_that_are_not_an_object(member, value):
    # The backstop under the service rule: written directly, bypassing every check.
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cast = "::jsonb" if ON_POSTGRES else ""
        cursor.execute(f"UPDATE governance_user SET attributes = %s{cast} WHERE id = %s", [value, member.pk])
    with connection.cursor() as cursor:
        cast = "::jsonb" if ON_POSTGRES else ""
        cursor.execute(
            f"UPDATE governance_user SET attributes = %s{cast} WHERE id = %s", ['{"a": 1}', member.pk]
        )
    member.refresh_from_db()
    assert member.attributes == {"a": 1}


def test_admin_sets_attributes_through_the_service(client, admin, member):
    client.force_login(admin)
    change = reverse("admin:governance_user_change", args=[member.pk])
    form = {
        "email": member.email,
        "role": member.role,
        "first_name": "",
        "last_name": "",
        "attributes": '{"patient_id": "p-001"}',
    }
    assert client.post(change, form).status_code == 302
    member.refresh_from_db()
    assert member.attributes == {"patient_id": "p-001"}
    event = AuditEvent.objects.get(action=Action.USER_UPDATED)
    assert event.actor_id == str(admin.pk)

    refused = client.post(change, {**form, "attributes": '{"patient_id": "p\\u202e1"}'})
    assert refused.status_code == 200
    assert "bidirectional" in str(refused.context["adminform"].form.errors)
    # The admin renders the stored value as a hidden initial (the field has a callable default); a
    # browser posts it back, and the admin compares with it to see what changed.
    stored = '{"patient_id": "p-001"}'
    emptied = client.post(change, {**form, "attributes": "", "initial-attributes": stored})
    assert emptied.status_code == 302
    member.refresh_from_db()
    assert member.attributes == {}


def test_admin_adds_a_user_with_attributes(client, admin, org):
    client.force_login(admin)
    added = client.post(
        reverse("admin:governance_user_add"),
        {
            "organization": org.pk,
            "username": "alice",
            "role": "member",
            "attributes": '{"patient_id": "p-1"}',
        },
    )
    assert added.status_code == 302
    assert User.objects.get(username="alice").attributes == {"patient_id": "p-1"}
