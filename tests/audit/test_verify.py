"""``manage.py audit_verify`` against intact lanes and against each kind of tampering.

On PostgreSQL every tampering step runs with the append-only trigger bypassed (see tests/audit/helpers.py:
``SET session_replication_role = replica`` as the superuser), as an attacker with that power would.  The
events of one test all land in one lane (one transaction keeps its lane); other lanes are built by hand
with ``append_to_lane``.
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
from tests.audit.helpers import (
    append_to_lane,
    insert_row,
    make_events,
    read_row,
    rehash_from,
    tamper,
    write_row,
)

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


def other_lane(event) -> int:
    return (event.lane + 1) % chain.MAX_LANES


def test_intact_chain_with_checkpoint_is_ok(events, capsys):
    assert {event.lane for event in events} == {events[0].lane}
    assert [event.lane_seq for event in events] == list(range(1, 13))
    out = run_verify(capsys)
    assert "audit chain OK" in out
    assert "events: 12" in out and "lanes: 1" in out and "checkpoints: 1" in out


def test_empty_log_is_ok(capsys):
    assert "audit chain OK" in run_verify(capsys)


def test_edited_row(events, capsys):
    with tamper() as cursor:
        write_row(cursor, events[4].seq, {"result": "failure"})
    assert f"#{events[4].seq}: content does not match its hash" in broken(capsys, events[4].seq)


def test_deleted_row(events, capsys):
    lane = events[0].lane
    with tamper() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = %s", [events[6].seq])
    message = broken(capsys, events[7].seq)
    assert f"lane {lane}: event {lane}/7 is missing (the lane continues at {lane}/8)" in message


def test_deleted_row_in_one_lane_leaves_the_other_lanes_fine(events, capsys):
    """Three more lanes, interleaved; a deletion in one is reported there, and only there."""
    lanes = [
        other_lane(events[0]),
        (events[0].lane + 2) % chain.MAX_LANES,
        (events[0].lane + 3) % chain.MAX_LANES,
    ]
    with tamper() as cursor:
        appended = {lane: [append_to_lane(cursor, lane) for _ in range(4)] for lane in lanes}
    checkpoint_create()
    assert verify_chain().ok
    with tamper() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = %s", [appended[lanes[1]][1]])
    report = verify_chain()
    assert [(p.seq, p.reason) for p in report.problems] == [
        (
            appended[lanes[1]][2],
            f"lane {lanes[1]}: event {lanes[1]}/2 is missing (the lane continues at {lanes[1]}/3)",
        )
    ]
    broken(capsys, appended[lanes[1]][2])


def test_swapped_pair(events, capsys):
    four, five = events[3].seq, events[4].seq
    with tamper() as cursor:
        row_four, row_five = read_row(cursor, four), read_row(cursor, five)
        write_row(cursor, four, {"hash": "f" * 64, "lane_seq": -1})  # unique columns: park one first
        write_row(cursor, five, row_four)
        write_row(cursor, four, row_five)
    broken(capsys, four)


def test_event_moved_to_another_lane(events, capsys):
    """The lane is hashed: moving an event, even to the tail of an empty lane, breaks its hash."""
    lane = other_lane(events[-1])
    with tamper() as cursor:
        write_row(
            cursor, events[-1].seq, {"lane": lane, "lane_seq": 1, "prev_hash": chain.genesis_hash(lane)}
        )
    message = broken(capsys, events[-1].seq)
    assert "content does not match its hash" in message


def test_row_inserted_in_the_middle_by_shifting(events, capsys):
    """The attacker shifts #6… up by one (seq and lane position) and inserts a well-formed event after #5."""
    with tamper() as cursor:
        for event in reversed(events[5:]):
            cursor.execute(
                "UPDATE audit_auditevent SET seq = seq + 1, lane_seq = lane_seq + 1 WHERE seq = %s",
                [event.seq],
            )
        forged = read_row(cursor, events[4].seq)
        forged.update(action="grant.revoked", prev_hash=forged["hash"], lane_seq=6)
        values = (events[5].seq, *(forged[name] for name in chain.FIELDS[1:]))
        forged["hash"] = chain.event_hash(values)
        insert_row(cursor, events[5].seq, forged)
    lane = events[0].lane
    assert f"lane {lane}: prev_hash is not the hash of {lane}/6" in broken(capsys, events[5].seq + 1)


def test_backdated_event_appended_to_a_lane_is_out_of_order(events, capsys):
    """A well-formed event appended to a lane's tail with an old seq (gaps are allowed) sits out of order."""
    with tamper() as cursor:
        cursor.execute("SELECT MIN(seq) FROM audit_auditevent")
        oldest = cursor.fetchone()[0]
        append_to_lane(cursor, events[0].lane, seq=oldest - 1)
    lane = events[0].lane
    message = broken(capsys, oldest - 1)
    assert f"lane {lane}: event {lane}/1–{lane}/12 is missing (the lane continues at {lane}/13)" in message


def test_row_appended_with_a_wrong_hash(events, capsys):
    head = events[-1]
    with tamper() as cursor:
        row = read_row(cursor, head.seq)
        row.update(prev_hash=row["hash"], hash="e" * 64, action="grant.revoked", lane_seq=13)
        insert_row(cursor, head.seq + 1, row)
    assert f"#{head.seq + 1}: content does not match its hash" in broken(capsys, head.seq + 1)


def test_recomputed_chain_is_caught_by_the_signed_checkpoint(events, capsys):
    with tamper() as cursor:
        write_row(cursor, events[2].seq, {"result": "denied"})
        rehash_from(cursor, events[2].seq)
    report = verify_chain()
    assert [p.seq for p in report.problems] == [events[-1].seq]  # every link is consistent again …
    lane = events[0].lane
    message = broken(capsys, events[-1].seq)  # … but the signed head is not
    assert f"lane {lane} was rewritten up to {lane}/12 (not the signed hash)" in message


def test_recomputed_chain_with_a_moved_checkpoint_fails_its_signature(events, capsys):
    with tamper() as cursor:
        write_row(cursor, events[2].seq, {"result": "denied"})
        rehash_from(cursor, events[2].seq)
        cursor.execute("SELECT hash FROM audit_auditevent WHERE seq = %s", [events[-1].seq])
        digest = cursor.fetchone()[0]
        heads = chain.canonical_json([[events[0].lane, 12, events[-1].seq, digest]])
        cursor.execute("UPDATE audit_auditcheckpoint SET heads = %s", [heads])
    assert "signature is invalid" in broken(capsys, events[-1].seq)


@pytest.mark.parametrize("claimed", ["the real key id", "the forger's key id"])
def test_forged_checkpoint_signature_is_caught(events, capsys, claimed):
    forger = Ed25519PrivateKey.generate()
    key_id = signing.current_key_id() if claimed == "the real key id" else signing.key_id(forger.public_key())
    head = make_events(1)[0]
    heads = [[head.lane, head.lane_seq, head.seq, head.hash]]
    created_at = timezone.now()
    message = checkpoint_message(events=13, seq=head.seq, heads=heads, created_at=created_at, key_id=key_id)
    AuditCheckpoint(
        events=13,
        seq=head.seq,
        heads=chain.canonical_json(heads),
        created_at=created_at,
        key_id=key_id,
        signature=base64.b64encode(forger.sign(message)).decode(),
    ).save()
    assert "signature is invalid" in broken(capsys, head.seq)


def test_truncated_tail_before_a_checkpoint(events, capsys):
    with tamper() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq >= %s", [events[9].seq])
    assert "the event it signs is missing" in broken(capsys, events[-1].seq)


def test_lane_deleted_entirely_after_a_checkpoint(events, capsys):
    lane = other_lane(events[0])
    with tamper() as cursor:
        appended = [append_to_lane(cursor, lane) for _ in range(3)]
    checkpoint_create()
    with tamper() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE lane = %s", [lane])
    message = broken(capsys, appended[-1])
    assert f"lane {lane} has no events left, but the checkpoint signs {lane}/3 (#{appended[-1]})" in message


def test_first_bad_event_is_named_when_several_are_bad(events, capsys):
    with tamper() as cursor:
        write_row(cursor, events[8].seq, {"actor_label": "someone else"})
        write_row(cursor, events[3].seq, {"parameters": '{"n":99}'})
    message = broken(capsys, events[3].seq)
    assert f"#{events[8].seq}: content does not match" in message
