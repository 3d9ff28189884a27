"""Reads of the audit log: lane heads for checkpoints and counts, and the search (scoped, keyset-paged)."""

from __future__ import annotations

from typing import NamedTuple

from django.db import connections
from django.db.models import F
from django.db.models.fields.tuple_lookups import Tuple, TupleGreaterThan, TupleLessThan

from audit.access import AuditReader
from audit.models import AuditEvent


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


def events_visible_to(reader: AuditReader):
    """The events ``reader`` may read: their organization's, or every event for a superuser's reader."""
    events = AuditEvent.objects.all()
    if reader.all_organizations:
        return events
    return events.filter(organization_id=reader.organization_id)


def event_for(reader: AuditReader, seq: int) -> AuditEvent | None:
    """One event by its number, or None when it does not exist or ``reader`` may not read it."""
    return events_visible_to(reader).filter(seq=seq).first()


class Page(NamedTuple):
    events: list[AuditEvent]
    next_after: int | None  # the ``seq`` to continue after, or None on the last page


def keyset_query(queryset, *, newest_first: bool, after: AuditEvent | None, size: int):
    """The query of one page of ``queryset`` in time order (ties broken by ``seq``), continuing after the
    event ``after``, one row more than ``size`` (to tell whether a next page exists): a range condition
    on ``(occurred_at, seq)`` that the time-leading indexes serve, so a page deep in the results costs
    what the first one does.  No ``COUNT(*)``, no ``OFFSET``."""
    order = ("-occurred_at", "-seq") if newest_first else ("occurred_at", "seq")
    queryset = queryset.order_by(*order)
    if after is not None:
        compare = TupleLessThan if newest_first else TupleGreaterThan
        queryset = queryset.filter(compare(Tuple(F("occurred_at"), F("seq")), (after.occurred_at, after.seq)))
    return queryset[: size + 1]


def keyset_page(queryset, *, newest_first: bool, after: AuditEvent | None, size: int) -> Page:
    """One page of ``queryset`` (see :func:`keyset_query`) and where the next one starts."""
    events = list(keyset_query(queryset, newest_first=newest_first, after=after, size=size))
    if len(events) > size:
        return Page(events[:size], events[size - 1].seq)
    return Page(events, None)


def request_events(reader: AuditReader, event: AuditEvent, *, limit: int = 100) -> list[AuditEvent]:
    """The other events of ``event``'s request that ``reader`` may read, in order."""
    if not event.request_id:
        return []
    siblings = events_visible_to(reader).filter(request_id=event.request_id).exclude(seq=event.seq)
    return list(siblings.order_by("seq")[:limit])


def lane_neighbours(reader: AuditReader, event: AuditEvent) -> tuple[AuditEvent | None, AuditEvent | None]:
    """The events before and after ``event`` in its lane, when ``reader`` may read them."""
    visible = events_visible_to(reader).filter(lane=event.lane)
    return (
        visible.filter(lane_seq=event.lane_seq - 1).first(),
        visible.filter(lane_seq=event.lane_seq + 1).first(),
    )
