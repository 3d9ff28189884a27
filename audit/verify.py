"""Verification of the lanes and their signed checkpoints (``manage.py audit_verify``).

Events are walked in ``seq`` order with one state per lane (:mod:`audit.walk`).  On PostgreSQL a large log
is split in two ``seq`` ranges: this process walks the first while a spawned worker walks the second in
the same exported snapshot, and the first event of each lane in the second range is then linked to where
that lane stood at the end of the first.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

from django.db import connections, transaction

from audit import chain, signing
from audit.models import AuditCheckpoint
from audit.services import checkpoint_message
from audit.walk import Walk, link_problem, select, walk, walk_range

#: Below this many events (by ``seq`` span) one process verifies alone: starting a worker costs more.
PARALLEL_MIN_EVENTS = 200_000


@dataclass
class Problem:
    seq: int
    reason: str


@dataclass
class Report:
    events: int = 0
    last_seq: int = 0
    lanes: dict[int, list] = field(default_factory=dict)  # lane → [next lane_seq, last hash]
    checkpoints: int = 0
    workers: int = 1
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.seq) if self.problems else None


def verify_chain(*, using: str = "default", workers: int | None = None, max_problems: int = 20) -> Report:
    """Walk every event, recomputing each hash and checking each lane's links; then check every checkpoint.

    ``workers``: 1 or 2 processes; by default 2 for a large log on PostgreSQL outside a transaction.  The
    checkpoints are read first (or in the same snapshot): each names events committed before it, so the
    event scan must contain them, even while new events are being appended.
    """
    connection = connections[using]
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        # One REPEATABLE READ snapshot for checkpoints and events, exported to the worker.  (Inside a
        # transaction, Django's cursor also streams, but another connection could not see its rows.)
        with transaction.atomic(using=using), connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            checkpoints = list(AuditCheckpoint.objects.using(using).order_by("events"))
            cursor.execute("SELECT MIN(seq), MAX(seq) FROM audit_auditevent")
            low, high = cursor.fetchone()
            span = 0 if low is None else high - low + 1
            if workers is None:
                workers = 2 if span >= PARALLEL_MIN_EVENTS else 1
            wanted = _wanted(checkpoints)
            if workers > 1 and span > 1:
                found = _walk_split(connection, cursor, wanted, low, high, max_problems)
            else:
                found = _walk_all(connection, wanted, max_problems)
    else:
        # SQLite's cursor streams without a transaction (which would take the write lock); PostgreSQL inside
        # the caller's transaction streams through a server-side cursor.
        checkpoints = list(AuditCheckpoint.objects.using(using).order_by("events"))
        wanted = _wanted(checkpoints)
        streaming = transaction.atomic(using=using) if connection.vendor == "postgresql" else nullcontext()
        with streaming:
            found = _walk_all(connection, wanted, max_problems)
    report = Report(
        events=found.events,
        last_seq=found.last_seq,
        lanes=found.lanes,
        workers=workers or 1,
        problems=[Problem(seq, reason) for seq, reason in found.problems],
    )
    for checkpoint in checkpoints:
        report.checkpoints += 1
        _check_checkpoint(checkpoint, found, report)
    report.problems.sort(key=lambda p: p.seq)
    return report


def _wanted(checkpoints: list[AuditCheckpoint]) -> dict[int, set[int]]:
    wanted: dict[int, set[int]] = {}
    for checkpoint in checkpoints:
        for head in _heads(checkpoint):
            wanted.setdefault(head[0], set()).add(head[1])
    return wanted


def _heads(checkpoint: AuditCheckpoint) -> list[list]:
    try:
        heads = json.loads(checkpoint.heads)
    except ValueError:
        return []
    return (
        [head for head in heads if isinstance(head, list) and len(head) == 4]
        if isinstance(heads, list)
        else []
    )


def _walk_all(connection, wanted: dict[int, set[int]], max_problems: int) -> Walk:
    with connection.chunked_cursor() as cursor:
        cursor.execute(select(connection.vendor), [chain.VERSION])
        return walk(cursor.fetchmany, wanted=wanted, max_problems=max_problems)


def _walk_split(
    connection, cursor, wanted: dict[int, set[int]], low: int, high: int, max_problems: int
) -> Walk:
    """This process walks ``[low, middle)``, a spawned worker ``[middle, high]``, in one snapshot."""
    middle = low + (high - low + 1) // 2
    cursor.execute("SELECT pg_export_snapshot()")
    snapshot = cursor.fetchone()[0]
    conninfo = {k: v for k, v in connection.get_connection_params().items() if isinstance(v, str | int)}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        second = pool.submit(walk_range, conninfo, snapshot, middle, high + 1, wanted, max_problems)
        with connection.chunked_cursor() as part:
            part.execute(select(connection.vendor, ranged=True), [chain.VERSION, low, middle])
            first = walk(part.fetchmany, wanted=wanted, max_problems=max_problems)
        return _merge(first, second.result())


def _merge(first: Walk, second: Walk) -> Walk:
    """Link each lane's first event in ``second`` to where the lane ended in ``first`` (or to its genesis)."""
    for lane, (lane_seq, seq, prev_hash) in second.firsts.items():
        expected, last_hash = first.lanes.get(lane, (1, chain.genesis_hash(lane)))
        reason = link_problem(lane, lane_seq, prev_hash, expected, last_hash)
        if reason:
            second.problems.append((seq, reason))
    return Walk(
        events=first.events + second.events,
        last_seq=second.last_seq or first.last_seq,
        lanes={**first.lanes, **second.lanes},
        signed={**first.signed, **second.signed},
        problems=first.problems + second.problems,
    )


def _check_checkpoint(checkpoint: AuditCheckpoint, found: Walk, report: Report) -> None:
    label = f"checkpoint {checkpoint.pk} ({checkpoint.events} events)"
    heads = _heads(checkpoint)
    if not _signature_ok(checkpoint, heads):
        report.problems.append(Problem(checkpoint.seq, f"{label}: signature is invalid"))
        return
    for lane, lane_seq, seq, digest in heads:
        event = found.signed.get((lane, lane_seq))
        if event is None and lane not in found.lanes:
            reason = f"lane {lane} has no events left, but the checkpoint signs {lane}/{lane_seq} (#{seq})"
        elif event is None:
            reason = f"the event it signs is missing: {lane}/{lane_seq}, #{seq} (the lane was truncated)"
        elif event != (seq, digest):
            reason = f"lane {lane} was rewritten up to {lane}/{lane_seq} (not the signed hash)"
        else:
            continue
        report.problems.append(Problem(seq, f"{label}: {reason}"))


def _signature_ok(checkpoint: AuditCheckpoint, heads: list[list]) -> bool:
    message = checkpoint_message(
        events=checkpoint.events,
        seq=checkpoint.seq,
        heads=heads,
        created_at=checkpoint.created_at,
        key_id=checkpoint.key_id,
    )
    return bool(heads) and signing.verify(
        message, signature=checkpoint.signature, signer_key_id=checkpoint.key_id
    )


#: The event page checks at most this many events of one lane; beyond, it points to ``audit_verify``.
EVENT_CHECK_LIMIT = 50_000


@dataclass
class EventCheck:
    """How one event stands in its lane.  ``ok`` is None when the stretch to check was too long.

    ``start``: the checkpoint the check started from (None: the lane's first event); ``signed_by``: a later
    checkpoint whose signed head the check reached, so the event itself is covered by a signature."""

    ok: bool | None
    first: int
    last: int
    start: AuditCheckpoint | None = None
    signed_by: AuditCheckpoint | None = None
    reason: str = ""


def _lane_head(checkpoint: AuditCheckpoint, lane: int) -> list | None:
    return next((head for head in _heads(checkpoint) if head[0] == lane), None)


def verify_event(event, *, using: str = "default", limit: int = EVENT_CHECK_LIMIT) -> EventCheck:
    """Check ``event``'s lane from the nearest signed checkpoint at or before it (or from the lane's first
    event) up to the event, and on to the next checkpoint that signs the lane at or past it when that is
    within ``limit`` events: the same walk as :func:`verify_chain`, over one stretch of one lane."""
    lane, position = event.lane, event.lane_seq
    checkpoints = AuditCheckpoint.objects.using(using)
    # Every head of a checkpoint whose newest seq is <= the event's precedes it in its lane.
    start = checkpoints.filter(seq__lte=event.seq).order_by("-events").first()
    anchor = None if start is None else _lane_head(start, lane)
    if anchor is None:
        start = None
    first = 1 if anchor is None else anchor[1]
    signed_by, end = None, None
    for later in checkpoints.filter(seq__gte=event.seq).order_by("events")[:8]:
        head = _lane_head(later, lane)
        if head is not None and head[1] >= position:
            signed_by, end = later, head
            break
    if end is not None and end[1] - first + 1 > limit:
        signed_by, end = None, None
    last = position if end is None else end[1]
    check = EventCheck(ok=None, first=first, last=last, start=start, signed_by=signed_by)
    if last - first + 1 > limit:
        check.reason = (
            f"{last - first + 1} events of lane {lane} lie between this event and the nearest checkpoint "
            f"before it: more than this page checks. Run manage.py audit_verify."
        )
        return check
    for checkpoint in (start, signed_by):
        if checkpoint is not None and not _signature_ok(checkpoint, _heads(checkpoint)):
            check.ok, check.reason = False, f"checkpoint {checkpoint.pk}: signature is invalid"
            return check
    wanted = {lane: {head[1] for head in (anchor, end) if head is not None}}
    connection = connections[using]
    # As in verify_chain: a transaction streams on PostgreSQL; on SQLite it would take the write lock.
    streaming = transaction.atomic(using=using) if connection.vendor == "postgresql" else nullcontext()
    with streaming, connection.chunked_cursor() as cursor:
        cursor.execute(select(connection.vendor, lane=True), [chain.VERSION, lane, first, last])
        found = walk(cursor.fetchmany, wanted=wanted, open_start=anchor is not None, max_problems=1)
    if found.problems:
        check.ok, check.reason = False, found.problems[0][1]
    elif found.events != last - first + 1 or (anchor and found.firsts.get(lane, (None,))[0] != first):
        check.ok, check.reason = (
            False,
            f"lane {lane}: events between {lane}/{first} and {lane}/{last} are missing",
        )
    else:
        for checkpoint, head in ((start, anchor), (signed_by, end)):
            if head is not None and found.signed.get((lane, head[1])) != (head[2], head[3]):
                check.ok = False
                check.reason = f"checkpoint {checkpoint.pk}: lane {lane} does not match its signed head"
                return check
        check.ok = True
    return check
