"""Raw-SQL tampering for the audit tests: what an attacker with database access could do.

On PostgreSQL the append-only trigger (migration audit/0002) refuses UPDATE and DELETE, so :func:`tamper`
switches this session to ``session_replication_role = replica``, which skips ordinary triggers.  Only a
superuser may do that (the tests connect as ``postgres``); the application role in production should not.
"""

from __future__ import annotations

from contextlib import contextmanager

from django.db import connection

from audit import chain
from audit.services import Actor, event_values, record

WRITABLE = [name for name in chain.FIELDS if name != "seq"] + ["hash"]


def make_events(count: int, **extra) -> list:
    actor = Actor(type="system", label="tests")
    return [record(action="grant.created", actor=actor, parameters={"n": n}, **extra) for n in range(count)]


@contextmanager
def tamper():
    """A cursor that may UPDATE and DELETE audit rows (trigger bypassed on PostgreSQL)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("RESET session_replication_role")


def read_row(cursor, seq: int) -> dict:
    cursor.execute(f"SELECT {', '.join(WRITABLE)} FROM audit_auditevent WHERE seq = %s", [seq])
    return dict(zip(WRITABLE, cursor.fetchone(), strict=True))


def write_row(cursor, seq: int, row: dict) -> None:
    assignments = ", ".join(f"{name} = %s" for name in row)
    cursor.execute(f"UPDATE audit_auditevent SET {assignments} WHERE seq = %s", [*row.values(), seq])


def insert_row(cursor, seq: int, row: dict) -> None:
    columns, placeholders = ", ".join(row), ", ".join(["%s"] * len(row))
    sql = f"INSERT INTO audit_auditevent (seq, {columns}) VALUES (%s, {placeholders})"
    cursor.execute(sql, [seq, *row.values()])


def _canonical(values: tuple) -> tuple:
    """Values as read back from the database, in the spelling the chain hashes."""
    ip = values[-2]
    return (*values[:-2], chain.canonical_ip(None if ip is None else str(ip)), values[-1])


def _lane_tail(cursor, lane: int, before: int | None = None) -> tuple[int, str]:
    """(lane_seq, hash) of the lane's newest event (below ``before``), or (0, genesis)."""
    bound, params = ("AND lane_seq < %s", [lane, before]) if before else ("", [lane])
    cursor.execute(
        f"SELECT lane_seq, hash FROM audit_auditevent WHERE lane = %s {bound} ORDER BY lane_seq DESC LIMIT 1",
        params,
    )
    return cursor.fetchone() or (0, chain.genesis_hash(lane))


def append_to_lane(cursor, lane: int, *, seq: int | None = None, action: str = "grant.created") -> int:
    """Append a well-formed event to the tail of ``lane`` by hand (as audit_append() would on PostgreSQL):
    lets the tests build several lanes on SQLite, and is what a writer without the signing key can do."""
    if seq is None:
        cursor.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_auditevent")
        seq = cursor.fetchone()[0]
    lane_seq, prev = _lane_tail(cursor, lane)
    values = event_values(action=action, actor=Actor(type="system", label=f"lane {lane}"))
    row = (seq, lane, lane_seq + 1, *(values[name] for name in chain.CONTENT), prev)
    columns = ", ".join(chain.FIELDS)
    placeholders = ", ".join(["%s"] * (len(chain.FIELDS) + 1))
    cursor.execute(
        f"INSERT INTO audit_auditevent ({columns}, hash) VALUES ({placeholders})",
        [*row, chain.event_hash(row)],
    )
    return seq


def rehash_from(cursor, seq: int) -> None:
    """What a careful attacker does after an edit: recompute every hash of the event's lane from it on."""
    cursor.execute("SELECT lane, lane_seq FROM audit_auditevent WHERE seq = %s", [seq])
    lane, lane_seq = cursor.fetchone()
    columns = ", ".join(chain.FIELDS)
    cursor.execute(
        f"SELECT {columns} FROM audit_auditevent WHERE lane = %s AND lane_seq >= %s ORDER BY lane_seq",
        [lane, lane_seq],
    )
    rows = cursor.fetchall()
    prev = _lane_tail(cursor, lane, before=lane_seq)[1]
    for row in rows:
        values = _canonical((*row[:-1], prev))
        digest = chain.event_hash(values)
        cursor.execute(
            "UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE seq = %s", [prev, digest, row[0]]
        )
        prev = digest
