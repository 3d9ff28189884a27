import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.test import override_settings

from audit import signing
from audit.models import AuditCheckpoint
from audit.services import checkpoint_create, checkpoint_message
from audit.tasks import create_checkpoint
from audit.verify import verify_chain
from tests.audit.helpers import append_to_lane, make_events, tamper

pytestmark = pytest.mark.django_db


def signed_events() -> list[int]:
    return list(AuditCheckpoint.objects.order_by("events").values_list("events", flat=True))


def test_checkpoint_signs_the_heads_of_every_lane():
    events = make_events(3)
    lane = events[0].lane
    with tamper() as cursor:
        other = append_to_lane(cursor, lane + 1)
    checkpoint = checkpoint_create()
    assert checkpoint.heads_list[0] == [lane, 3, events[-1].seq, events[-1].hash]
    assert [head[:3] for head in checkpoint.heads_list] == [[lane, 3, events[-1].seq], [lane + 1, 1, other]]
    assert (checkpoint.events, checkpoint.seq) == (4, max(other, events[-1].seq))
    assert checkpoint.key_id == signing.current_key_id()
    fields = {
        "events": 4,
        "seq": checkpoint.seq,
        "created_at": checkpoint.created_at,
        "key_id": checkpoint.key_id,
    }
    message = checkpoint_message(heads=checkpoint.heads_list, **fields)
    assert signing.verify(message, signature=checkpoint.signature, signer_key_id=checkpoint.key_id)
    older = [[lane, 2, events[-2].seq, events[-2].hash], checkpoint.heads_list[1]]
    tampered = checkpoint_message(heads=older, **fields)
    assert not signing.verify(tampered, signature=checkpoint.signature, signer_key_id=checkpoint.key_id)


def test_no_checkpoint_on_an_empty_log_or_twice_at_the_same_heads():
    assert checkpoint_create() is None
    make_events(2)
    assert checkpoint_create() is not None
    assert checkpoint_create() is None
    assert AuditCheckpoint.objects.count() == 1
    make_events(1)
    assert checkpoint_create().events == 3
    assert signed_events() == [2, 3]


def test_celery_task_creates_a_checkpoint_eagerly():
    make_events(2)
    assert create_checkpoint.apply().get() == 2
    assert create_checkpoint.apply().get() is None
    assert AuditCheckpoint.objects.get().events == 2


def test_command_reports_what_it_signed(capsys):
    call_command("audit_checkpoint")
    assert "nothing to sign" in capsys.readouterr().out
    (event,) = make_events(1)
    call_command("audit_checkpoint")
    assert f"signed checkpoint of 1 events in 1 lane(s), up to #{event.seq}" in capsys.readouterr().out


@override_settings(AUDIT_CHECKPOINT_EVERY=3)
def test_record_signs_every_nth_event_of_a_lane():
    make_events(7)
    assert signed_events() == [3, 6]
    assert verify_chain().ok


def test_key_rotation_without_the_old_key_fails_old_checkpoints(settings):
    """Only the configured key verifies; rotating it without keeping the old one is reported, not hidden."""
    (event,) = make_events(1)
    checkpoint_create()
    settings.AUDIT_SIGNING_KEY = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    report = verify_chain()
    assert len(report.problems) == 1
    assert report.problems[0].seq == event.seq and report.problems[0].reason.endswith("signature is invalid")
