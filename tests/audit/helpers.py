"""Raw-SQL tampering for the audit tests: what an attacker with database access could do.

On PostgreSQL the append-only trigger (migration audit/0002) refuses UPDATE and DELETE, so :func:`tamper`
switches this session to ``session_replication_role = replica``, which skips ordinary triggers.  Only a
superuser may do that (the tests connect as ``postgres``); the application role in production should not.
"""

from __future__ import annotations

from contextlib import contextmanager

from django.db import connection

from audit import chain
from audit.services import Actor, record

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


def rehash_from(cursor, seq: int) -> None:
    """What a careful attacker does after an edit: recompute every hash from ``seq`` to the head."""
    columns = ", ".join(chain.FIELDS)
    cursor.execute(f"SELECT {columns} FROM audit_auditevent WHERE seq >= %s ORDER BY seq", [seq])
    rows = cursor.fetchall()
    cursor.execute("SELECT hash FROM audit_auditevent WHERE seq = %s", [seq - 1])
    prev = cursor.fetchone()[0] if seq > 1 else chain.GENESIS_HASH
    for row in rows:
        values = (*row[:-1], prev)
        if values[-2] is not None:
            values = (*values[:-2], chain.canonical_ip(str(values[-2])), prev)
        digest = chain.event_hash(values)
        cursor.execute(
            "UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE seq = %s", [prev, digest, row[0]]
        )
        prev = digest
