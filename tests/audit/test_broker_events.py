"""The token broker's key rotations and initial access tokens land in the audit log, without secrets."""

import io

import pytest
from django.core.management import call_command

from audit.actions import ActorType
from audit.models import AuditEvent
from audit.services import Actor
from audit.verify import verify_chain
from governance.errors import InvalidInput
from governance.models import SigningKey
from governance.oauth import signing_keys
from governance.services.signing_keys import signing_key_rotate

SYSTEM = Actor(type=ActorType.SYSTEM, label="test")

pytestmark = pytest.mark.django_db


def test_rotation_records_the_new_key_and_each_retired_key():
    old, _ = signing_keys.signing_key()
    call_command("signing_keys", "rotate", stdout=io.StringIO())
    new = SigningKey.objects.exclude(pk=old.pk).get()

    rotated = AuditEvent.objects.get(action="signing_key.rotated")
    assert (rotated.actor_type, rotated.actor_label) == ("system", "manage.py signing_keys")
    assert (rotated.target_type, rotated.target_id) == ("governance.signingkey", str(new.pk))
    assert rotated.parameters_dict["kid"] == new.kid
    assert rotated.parameters_dict["retires"] == [old.kid]
    retired = AuditEvent.objects.get(action="signing_key.retired")
    assert retired.target_id == str(old.pk)
    assert retired.parameters_dict == {
        "kid": old.kid,
        "retired_at": rotated.parameters_dict["signs_from"],
        "replaced_by": new.kid,
    }
    for event in (rotated, retired):  # public key ids only: no private material, encrypted or not
        for key in (old, new):
            assert key.private_key_encrypted not in event.parameters
            assert key.public_jwk["x"] not in event.parameters
    assert verify_chain().ok


def test_rotation_with_nothing_to_retire_records_only_the_rotation():
    signing_key_rotate(actor=SYSTEM, now=True)
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["signing_key.rotated"]
    assert AuditEvent.objects.get().parameters_dict["retires"] == []


def test_initial_access_token_creation_is_recorded_without_its_value(org, capability):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "initial_access_token", "create", "--organization", org.slug, "--ceiling", capability.key,
        "--uses", "2", "--label", "ci agents", stdout=out, stderr=err,
    )  # fmt: skip
    value = out.getvalue().strip()

    event = AuditEvent.objects.get(action="initial_access_token.created")
    assert event.organization_id == org.pk
    assert event.target_type == "governance.initialaccesstoken" and event.target_label == "ci agents"
    assert event.capabilities == capability.key
    assert event.parameters_dict["max_uses"] == 2
    assert set(event.parameters_dict) == {"max_uses", "expires_at"}
    stored = (
        AuditEvent.objects.filter(pk=event.pk).values_list(*[f.name for f in AuditEvent._meta.fields]).get()
    )
    assert len(value) > 20 and not any(value in str(field) for field in stored)


def test_refused_initial_access_token_records_nothing(org):
    with pytest.raises(InvalidInput):
        call_command("initial_access_token", "create", "--organization", org.slug, "--ceiling", "no.such")
    assert not AuditEvent.objects.exists()
