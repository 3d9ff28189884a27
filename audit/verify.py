"""Verification of the chain and its signed checkpoints (``manage.py audit_verify``)."""

from __future__ import annotations

from dataclasses import dataclass, field


from django.db import connections
from django.utils.dateparse import parse_datetime

from audit import chain, signing
from audit.models import AuditCheckpoint
from audit.services import checkpoint_message

BATCH = 20_000


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


def _column(name: str, vendor: str) -> str:
    if name == "client_ip" and vendor == "postgresql":
        return "host(client_ip)"
    return name


def verify_chain(*, using: str = "default", max_problems: int = 20) -> Report:
    """Walk every event in ``seq`` order, recomputing each hash; then check every checkpoint."""
    report = Report()
    connection = connections[using]
    columns = ", ".join(_column(name, connection.vendor) for name in chain.FIELDS)
    expected_seq, prev_hash = 1, chain.GENESIS_HASH
    hashes_at: dict[int, str] = {}
    checkpoint_seqs = set(AuditCheckpoint.objects.using(using).values_list("seq", flat=True))
    event_hash = chain.event_hash
    with connection.chunked_cursor() as cursor:
        cursor.execute(f"SELECT {columns}, hash FROM audit_auditevent ORDER BY seq")  # noqa: S608
        while rows := cursor.fetchmany(BATCH):
            for row in rows:
                *values, stored = row
                seq = values[0]
                if isinstance(values[1], str):
                    values[1] = parse_datetime(values[1])
                report.events += 1
                if len(report.problems) < max_problems:
                    if seq != expected_seq:
                        report.problems.append(
                            Problem(seq, f"sequence gap: expected #{expected_seq}, found #{seq}")
                        )
                    elif values[-1] != prev_hash:
                        report.problems.append(Problem(seq, "prev_hash does not match the previous event"))
                    elif event_hash(tuple(values)) != stored:
                        report.problems.append(Problem(seq, "content does not match its hash"))
                if seq in checkpoint_seqs:
                    hashes_at[seq] = stored
                expected_seq, prev_hash = seq + 1, stored
    report.last_seq, report.last_hash = expected_seq - 1, prev_hash
    for checkpoint in AuditCheckpoint.objects.using(using).order_by("seq"):
        report.checkpoints += 1
        message = checkpoint_message(
            seq=checkpoint.seq,
            event_hash=checkpoint.event_hash,
            created_at=checkpoint.created_at,
            key_id=checkpoint.key_id,
        )
        if not signing.verify(message, signature=checkpoint.signature, signer_key_id=checkpoint.key_id):
            report.problems.append(Problem(checkpoint.seq, f"checkpoint {checkpoint.pk}: signature is invalid"))
        elif checkpoint.seq not in hashes_at:
            report.problems.append(
                Problem(checkpoint.seq, f"checkpoint {checkpoint.pk}: the event it signs is missing")
            )
        elif hashes_at[checkpoint.seq] != checkpoint.event_hash:
            report.problems.append(
                Problem(checkpoint.seq, f"checkpoint {checkpoint.pk}: the chain was rewritten up to here")
            )
    return report


