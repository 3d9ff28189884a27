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
from tests.audit.helpers import make_events

pytestmark = pytest.mark.django_db


def test_checkpoint_signs_the_head():
    events = make_events(3)
    checkpoint = checkpoint_create()
    assert (checkpoint.seq, checkpoint.event_hash) == (events[-1].seq, events[-1].hash)
    assert checkpoint.key_id == signing.current_key_id()
    message = checkpoint_message(
        seq=checkpoint.seq,
        event_hash=checkpoint.event_hash,
        created_at=checkpoint.created_at,
        key_id=checkpoint.key_id,
    )
    assert signing.verify(message, signature=checkpoint.signature, signer_key_id=checkpoint.key_id)
    tampered = checkpoint_message(
        seq=checkpoint.seq - 1,
        event_hash=events[-2].hash,
        created_at=checkpoint.created_at,
        key_id=checkpoint.key_id,
    )
    assert not signing.verify(tampered, signature=checkpoint.signature, signer_key_id=checkpoint.key_id)


def test_no_checkpoint_on_an_empty_log_or_twice_at_the_same_head():
    assert checkpoint_create() is None
    make_events(2)
    assert checkpoint_create() is not None
    assert checkpoint_create() is None
    assert AuditCheckpoint.objects.count() == 1
    make_events(1)
    assert checkpoint_create().seq == 3
    assert list(AuditCheckpoint.objects.order_by("seq").values_list("seq", flat=True)) == [2, 3]


def test_celery_task_creates_a_checkpoint_eagerly():
    make_events(2)
    assert create_checkpoint.apply().get() == 2
    assert create_checkpoint.apply().get() is None
    assert AuditCheckpoint.objects.get().seq == 2


def test_command_reports_what_it_signed(capsys):
    call_command("audit_checkpoint")
    assert "nothing to sign" in capsys.readouterr().out
    make_events(1)
    call_command("audit_checkpoint")
    assert "signed checkpoint at #1" in capsys.readouterr().out


@override_settings(AUDIT_CHECKPOINT_EVERY=3)
def test_record_signs_every_nth_event():
    make_events(7)
    assert list(AuditCheckpoint.objects.order_by("seq").values_list("seq", flat=True)) == [3, 6]
    assert verify_chain().ok


def test_key_rotation_without_the_old_key_fails_old_checkpoints(settings):
    """Only the configured key verifies; rotating it without keeping the old one is reported, not hidden."""
    make_events(1)
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
    assert report.problems[0].seq == 1 and report.problems[0].reason.endswith("signature is invalid")
