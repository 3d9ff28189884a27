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
    message = checkpoint_message(
        events=checkpoint.events,
        seq=checkpoint.seq,
        heads=heads,
        created_at=checkpoint.created_at,
        key_id=checkpoint.key_id,
    )
    if not heads or not signing.verify(
        message, signature=checkpoint.signature, signer_key_id=checkpoint.key_id
    ):
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
