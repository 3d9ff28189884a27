"""Reads of the audit log that need more than a queryset."""

from __future__ import annotations

from typing import NamedTuple

from django.db import connections


class Head(NamedTuple):
    """The newest event of a lane."""

    lane: int
    lane_seq: int
    seq: int
    hash: str


# A loose index scan over (lane, lane_seq): one index probe per lane instead of reading the table, on
# PostgreSQL and SQLite alike.  Lanes are found in the table, not in settings, so a lane that is no longer
# written to is still counted and still checkpointed.
_HEADS_SQL = """
WITH RECURSIVE lanes(lane) AS (
    SELECT MIN(lane) FROM audit_auditevent
    UNION ALL
    SELECT (SELECT MIN(e.lane) FROM audit_auditevent e WHERE e.lane > lanes.lane) FROM lanes
    WHERE lanes.lane IS NOT NULL
)
SELECT e.lane, e.lane_seq, e.seq, e.hash
FROM lanes JOIN audit_auditevent e ON e.lane = lanes.lane AND e.lane_seq = (
    SELECT MAX(h.lane_seq) FROM audit_auditevent h WHERE h.lane = lanes.lane
)
ORDER BY e.lane
"""


def lane_heads(*, using: str = "default") -> list[Head]:
    """The newest visible event of every lane that has events, ordered by lane."""
    with connections[using].cursor() as cursor:
        cursor.execute(_HEADS_SQL)
        return [Head(*row) for row in cursor.fetchall()]


def event_count(*, using: str = "default") -> int:
    """How many events the log holds, exactly, without ``COUNT(*)``: lanes have no gaps, so each lane's
    newest position is its number of events."""
    return sum(head.lane_seq for head in lane_heads(using=using))
