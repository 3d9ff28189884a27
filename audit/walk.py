"""The hot loop of verification: walk events in ``seq`` order and check every lane as it goes.

Django-free (it imports only :mod:`audit.chain`), so that :func:`walk_range` can run in a spawned worker
process with its own PostgreSQL connection, importing the exported snapshot of the main process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from audit import chain

BATCH = 10_000
_NOTHING: frozenset[int] = frozenset()

# Read as text in the exact canonical spelling, so that no per-row datetime parsing or formatting is needed.
_POSTGRESQL_COLUMNS = {
    "occurred_at": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    "client_ip": "host(client_ip)",
}


def select(vendor: str, *, ranged: bool = False, lane: bool = False) -> str:
    """Rows shaped as the canonical array (version tag first, ``prev_hash`` last), then the stored hash;
    the version tag is the first parameter, and a ranged query takes ``[low, high)`` of ``seq`` after it,
    a ``lane`` query the lane and ``[first, last]`` of its positions."""
    postgresql = vendor == "postgresql"
    columns = ", ".join(_POSTGRESQL_COLUMNS.get(name, name) if postgresql else name for name in chain.FIELDS)
    where = " WHERE seq >= %s AND seq < %s" if ranged else ""
    if lane:
        where = " WHERE lane = %s AND lane_seq >= %s AND lane_seq <= %s"
    tag = "%s::text" if postgresql else "%s"
    return f"SELECT {tag}, {columns}, hash FROM audit_auditevent{where} ORDER BY seq"  # noqa: S608


@dataclass
class Walk:
    """What one walk found.  ``lanes``: lane → [next lane_seq, last hash]; ``firsts`` (open start only):
    lane → (lane_seq, seq, prev_hash) of the first event seen, whose link the caller checks; ``signed``:
    (lane, lane_seq) → (seq, hash) of the events checkpoints name; ``problems``: (seq, reason)."""

    events: int = 0
    last_seq: int = 0
    lanes: dict[int, list] = field(default_factory=dict)
    firsts: dict[int, tuple[int, int, str]] = field(default_factory=dict)
    signed: dict[tuple[int, int], tuple[int, str]] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)


def link_problem(lane: int, lane_seq: int, prev_hash: str, expected: int, last_hash: str) -> str | None:
    """Why an event at ``lane_seq`` linking to ``prev_hash`` cannot follow a lane at (expected, last hash)."""
    if lane_seq > expected:
        missing = (
            f"{lane}/{expected}" if lane_seq == expected + 1 else f"{lane}/{expected}–{lane}/{lane_seq - 1}"
        )
        return f"lane {lane}: event {missing} is missing (the lane continues at {lane}/{lane_seq})"
    if lane_seq < expected:
        return f"lane {lane}: position {lane}/{lane_seq} is out of order (expected {lane}/{expected})"
    if prev_hash != last_hash:
        return f"lane {lane}: prev_hash is not the hash of {lane}/{lane_seq - 1}"
    return None


def walk(fetchmany, *, wanted: dict[int, set[int]], open_start: bool = False, max_problems: int = 20) -> Walk:
    """Check rows from ``fetchmany`` (see :func:`select`): each lane's positions continue without a gap,
    each ``prev_hash`` is the hash of the lane's previous event, each hash matches the content.

    With ``open_start`` the rows begin in the middle of the log: the first event of each lane is not linked
    here but reported in ``firsts`` for the caller to link to the part before.
    """
    result = Walk()
    firsts, signed, problems = result.firsts, result.signed, result.problems
    dumps, sha256, timestamp, canonical_ip = (
        chain.canonical_json,
        hashlib.sha256,
        chain.timestamp,
        chain.canonical_ip,
    )
    states: dict[int, list] = {}  # lane → [next lane_seq, last hash, lane_seqs named by checkpoints]
    while rows := fetchmany(BATCH):
        for row in rows:
            seq, lane, lane_seq, prev_hash, stored = row[1], row[2], row[3], row[-2], row[-1]
            state = states.get(lane)
            if state is None:
                if open_start:
                    firsts[lane] = (lane_seq, seq, prev_hash)
                    state = [lane_seq, prev_hash, wanted.get(lane, _NOTHING)]
                else:
                    state = [1, chain.genesis_hash(lane), wanted.get(lane, _NOTHING)]
                states[lane] = state
            if len(problems) < max_problems:
                canonical = row[:-1]
                ip = row[-3]
                if ip is not None and ":" in ip or type(row[4]) is not str:
                    # IPv6 (the database's spelling may differ from ours) or a datetime (SQLite).
                    ip = None if ip is None else canonical_ip(ip)
                    canonical = (*row[:4], timestamp(row[4]), *row[5:-3], ip, prev_hash)
                if lane_seq != state[0] or prev_hash != state[1]:
                    problems.append((seq, link_problem(lane, lane_seq, prev_hash, state[0], state[1])))
                elif sha256(dumps(canonical).encode()).hexdigest() != stored:
                    problems.append((seq, "content does not match its hash"))
            if lane_seq in state[2]:
                signed[(lane, lane_seq)] = (seq, stored)
            state[0], state[1] = lane_seq + 1, stored
        result.events += len(rows)
        result.last_seq = rows[-1][1]
    result.lanes.update({lane: state[:2] for lane, state in states.items()})
    return result


def walk_range(
    conninfo: dict, snapshot: str, low: int, high: int, wanted: dict[int, set[int]], max_problems: int
) -> Walk:
    """A worker process's part: events with ``low <= seq < high`` in the exported ``snapshot``."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(**conninfo) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        with connection.cursor(name="audit_verify_part") as cursor:
            cursor.itersize = BATCH
            cursor.execute(select("postgresql", ranged=True), [chain.VERSION, low, high])
            return walk(cursor.fetchmany, wanted=wanted, open_start=True, max_problems=max_problems)
