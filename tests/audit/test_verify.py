"""``manage.py audit_verify`` against an intact chain and against each kind of tampering.

On PostgreSQL every tampering step runs with the append-only trigger bypassed (see tests/audit/helpers.py:
``SET session_replication_role = replica`` as the superuser), as an attacker with that power would.
"""

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit import chain, signing
from audit.models import AuditCheckpoint
from audit.services import checkpoint_create, checkpoint_message
from audit.verify import verify_chain
from tests.audit.helpers import insert_row, make_events, read_row, rehash_from, tamper, write_row

pytestmark = pytest.mark.django_db


def run_verify(capsys):
    call_command("audit_verify")
    return capsys.readouterr().out


def broken(capsys, seq: int) -> str:
    with pytest.raises(CommandError, match=rf"first bad event #{seq}:") as caught:
        call_command("audit_verify")
    return f"{caught.value} {capsys.readouterr().err}"


@pytest.fixture
def events():
    made = make_events(12)
    checkpoint_create()
    return made


def test_intact_chain_with_checkpoint_is_ok(events, capsys):
    out = run_verify(capsys)
    assert "audit chain OK" in out
    assert "events: 12" in out and "checkpoints: 1" in out


def test_empty_log_is_ok(capsys):
    assert "audit chain OK" in run_verify(capsys)


def test_edited_row(events, capsys):
    with tamper() as cursor:
        write_row(cursor, 5, {"result": "failure"})
    assert "#5: content does not match its hash" in broken(capsys, 5)


def test_deleted_row(events, capsys):
    with tamper() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = 7")
    assert "event #7 is missing (next is #8)" in broken(capsys, 7)


def test_swapped_pair(events, capsys):
    with tamper() as cursor:
        four, five = read_row(cursor, 4), read_row(cursor, 5)
        write_row(cursor, 4, {"hash": "f" * 64})  # the hash column is unique: park one first
        write_row(cursor, 5, four)
        write_row(cursor, 4, five)
    broken(capsys, 4)


def test_row_inserted_in_the_middle_by_shifting(events, capsys):
    """The attacker shifts #6… up by one and inserts a well-formed event linked to #5."""
    with tamper() as cursor:
        for seq in range(12, 5, -1):
            cursor.execute("UPDATE audit_auditevent SET seq = seq + 1 WHERE seq = %s", [seq])
        forged = read_row(cursor, 5)
        forged.update(action="grant.revoked", prev_hash=forged["hash"])
        values = (6, *(forged[name] for name in chain.FIELDS[1:]))
        forged["hash"] = chain.event_hash(values)
        insert_row(cursor, 6, forged)
    assert "#7: prev_hash is not the hash of #6" in broken(capsys, 7)


def test_row_appended_with_a_wrong_hash(events, capsys):
    with tamper() as cursor:
        row = read_row(cursor, 12)
        row.update(prev_hash=row["hash"], hash="e" * 64, action="grant.revoked")
        insert_row(cursor, 13, row)
    assert "#13: content does not match its hash" in broken(capsys, 13)


def test_recomputed_chain_is_caught_by_the_signed_checkpoint(events, capsys):
    with tamper() as cursor:
        write_row(cursor, 3, {"result": "denied"})
        rehash_from(cursor, 3)
    report = verify_chain()
    assert [p.seq for p in report.problems] == [12]  # every link is consistent again …
    assert "chain was rewritten up to here" in broken(capsys, 12)  # … but the signed head is not


def test_recomputed_chain_with_a_moved_checkpoint_fails_its_signature(events, capsys):
    with tamper() as cursor:
        write_row(cursor, 3, {"result": "denied"})
        rehash_from(cursor, 3)
        cursor.execute("SELECT hash FROM audit_auditevent WHERE seq = 12")
        cursor.execute("UPDATE audit_auditcheckpoint SET event_hash = %s", [cursor.fetchone()[0]])
    assert "signature is invalid" in broken(capsys, 12)


@pytest.mark.parametrize("claimed", ["the real key id", "the forger's key id"])
def test_forged_checkpoint_signature_is_caught(events, capsys, claimed):
    forger = Ed25519PrivateKey.generate()
    key_id = signing.current_key_id() if claimed == "the real key id" else signing.key_id(forger.public_key())
    head = make_events(1)[0]
    created_at = timezone.now()
    message = checkpoint_message(seq=head.seq, event_hash=head.hash, created_at=created_at, key_id=key_id)
    AuditCheckpoint(
        seq=head.seq,
        event_hash=head.hash,
        created_at=created_at,
        key_id=key_id,
        signature=base64.b64encode(forger.sign(message)).decode(),
    ).save()
    assert "signature is invalid" in broken(capsys, 13)


def test_truncated_tail_before_a_checkpoint(events, capsys):
    with tamper() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq >= 10")
    assert "the event it signs is missing" in broken(capsys, 12)


def test_first_bad_event_is_named_when_several_are_bad(events, capsys):
    with tamper() as cursor:
        write_row(cursor, 9, {"actor_label": "someone else"})
        write_row(cursor, 4, {"parameters": '{"n":99}'})
    message = broken(capsys, 4)
    assert "#9: content does not match" in message
