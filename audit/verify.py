"""Verification of the chain and its signed checkpoints (``manage.py audit_verify``)."""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass, field

from django.db import connections, transaction

from audit import chain, signing
from audit.models import AuditCheckpoint
from audit.services import checkpoint_message

BATCH = 10_000

# Read as text in the exact canonical spelling, so that no per-row datetime parsing or formatting is needed.
_POSTGRESQL_COLUMNS = {
    "occurred_at": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    "client_ip": "host(client_ip)",
}


@dataclass
class Problem:
    seq: int
    reason: str


@dataclass
class Report:
    events: int = 0
    last_seq: int = 0
    last_hash: str = chain.GENESIS_HASH
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.seq) if self.problems else None


def _select(vendor: str) -> str:
    """Rows shaped as the canonical array (version tag first, ``prev_hash`` last), then the stored hash."""
    columns = ", ".join(
        _POSTGRESQL_COLUMNS.get(name, name) if vendor == "postgresql" else name for name in chain.FIELDS
    )
    return f"SELECT %s, {columns}, hash FROM audit_auditevent ORDER BY seq"  # noqa: S608


def verify_chain(*, using: str = "default", max_problems: int = 20) -> Report:
    """Walk every event in ``seq`` order, recomputing each hash; then check every checkpoint.

    Checkpoints are read first: each one names an event committed before it, so the event scan that
    follows (a later snapshot) must contain it, even while new events are being appended.
    """
    report = Report()
    connection = connections[using]
    checkpoints = list(AuditCheckpoint.objects.using(using).order_by("seq"))
    wanted = {checkpoint.seq for checkpoint in checkpoints}
    hashes_at: dict[int, str] = {}
    # PostgreSQL: inside a transaction the server-side cursor streams; in autocommit Django would declare
    # it WITH HOLD, which materialises the whole result before the first row.  (On SQLite a transaction
    # would take the write lock, and its cursor streams anyway.)
    streaming = transaction.atomic(using=using) if connection.vendor == "postgresql" else nullcontext()
    with streaming, connection.chunked_cursor() as cursor:
        cursor.execute(_select(connection.vendor), [chain.VERSION])
        _walk(cursor, report, wanted, hashes_at, max_problems)
    for checkpoint in checkpoints:
        report.checkpoints += 1
        _check_checkpoint(checkpoint, hashes_at, report)
    return report


def _walk(cursor, report: Report, wanted: set[int], hashes_at: dict[int, str], max_problems: int) -> None:
    """The hot loop: one canonical encoding and one SHA-256 per row, nothing else that can be avoided."""
    problems = report.problems
    expected_seq, prev_hash = 1, chain.GENESIS_HASH
    dumps, sha256, timestamp, canonical_ip = (
        chain.canonical_json,
        hashlib.sha256,
        chain.timestamp,
        chain.canonical_ip,
    )
    while rows := cursor.fetchmany(BATCH):
        for row in rows:
            seq, stored = row[1], row[-1]
            if len(problems) < max_problems:
                canonical = row[:-1]
                ip = row[-3]
                if ip is not None and ":" in ip or type(row[2]) is not str:
                    # IPv6 (the database's spelling may differ from ours) or a datetime (SQLite).
                    ip = None if ip is None else canonical_ip(ip)
                    canonical = (*row[:2], timestamp(row[2]), *row[3:-3], ip, row[-2])
                if seq != expected_seq:
                    problems.append(_gap(expected_seq, seq))
                elif row[-2] != prev_hash:
                    problems.append(Problem(seq, f"prev_hash is not the hash of #{seq - 1}"))
                elif sha256(dumps(canonical).encode()).hexdigest() != stored:
                    problems.append(Problem(seq, "content does not match its hash"))
            if seq in wanted:
                hashes_at[seq] = stored
            expected_seq, prev_hash = seq + 1, stored
        report.events += len(rows)
    report.last_seq, report.last_hash = expected_seq - 1, prev_hash


def _gap(expected: int, found: int) -> Problem:
    missing = f"#{expected}" if found == expected + 1 else f"#{expected}–#{found - 1}"
    return Problem(expected, f"event {missing} is missing (next is #{found})")


def _check_checkpoint(checkpoint: AuditCheckpoint, hashes_at: dict[int, str], report: Report) -> None:
    label = f"checkpoint {checkpoint.pk} at #{checkpoint.seq}"
    message = checkpoint_message(
        seq=checkpoint.seq,
        event_hash=checkpoint.event_hash,
        created_at=checkpoint.created_at,
        key_id=checkpoint.key_id,
    )
    if not signing.verify(message, signature=checkpoint.signature, signer_key_id=checkpoint.key_id):
        report.problems.append(Problem(checkpoint.seq, f"{label}: signature is invalid"))
    elif checkpoint.seq not in hashes_at:
        report.problems.append(
            Problem(checkpoint.seq, f"{label}: the event it signs is missing (the log was truncated)")
        )
    elif hashes_at[checkpoint.seq] != checkpoint.event_hash:
        report.problems.append(
            Problem(checkpoint.seq, f"{label}: the chain was rewritten up to here (not the signed hash)")
        )
