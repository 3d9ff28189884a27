"""Time ``manage.py audit_verify`` over a PostgreSQL audit log of 1,000,000 events.

    .venv/bin/python bench/audit_verify.py [--events 1000000] [--rounds 3]

Creates and drops the database ``gh_bench_audit_verify`` on 127.0.0.1:5432.  The log is filled through
the fast path: rows are built by ``audit.services.event_values()`` (the same cleaning as ``record()``),
spread over ``--lanes`` lanes, chained per lane with ``audit.chain.event_hash()`` in Python and loaded with
COPY; a checkpoint signs every lane's head every 100,000 events.  Then ``record()`` appends a few events on
top and ``checkpoint_create()`` signs the heads, so verification also proves that the bulk rows are
exactly what the append path produces.

Peers, median of ``--rounds`` each: ``audit_verify`` (the command, in-process, DEBUG off; two processes
for a log this large), ``audit_verify --workers 1``, and ``scan`` (the single-process query and cursor,
rows fetched and dropped: the floor set by reading alone).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.audit_common import PG, bench_database, median, server_settings, setup_django  # noqa: E402

DATABASE = "gh_bench_audit_verify"
IPS = ["203.0.113.7", "198.51.100.20", "2001:db8::17", "10.0.0.4", None]
ACTIONS = ["decision.allowed", "decision.denied", "token.issued", "token.exchanged", "grant.created"]


def fill(count: int, lanes: int) -> float:
    import psycopg

    from audit import chain, context
    from audit.services import Actor, _sign_checkpoint, event_values

    actors = [Actor(type="agent", id=str(i), label=f"agent-{i}") for i in range(50)]
    columns = chain.FIELDS + ("hash",)
    started = time.perf_counter()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    heads: dict[int, list] = {}  # lane → [lane_seq, seq, hash]
    checkpoints = []
    with psycopg.connect(f"{PG}/{DATABASE}") as connection:
        with connection.cursor().copy(f"COPY audit_auditevent ({', '.join(columns)}) FROM STDIN") as copy:
            for seq in range(1, count + 1):
                token = context._current.set(
                    context.RequestContext(request_id=uuid.uuid4().hex, client_ip=IPS[seq % len(IPS)])
                )
                try:
                    values = event_values(
                        action=ACTIONS[seq % len(ACTIONS)],
                        actor=actors[seq % len(actors)],
                        result="success" if seq % 7 else "denied",
                        capabilities=["records.read_own"],
                        parameters={"tool": "records.read", "patient_id": seq % 5000, "n": seq},
                    )
                finally:
                    context._current.reset(token)
                values["occurred_at"] = base + timedelta(microseconds=37 * seq)
                lane = (seq * 7919) % lanes  # spread, not strictly round-robin
                lane_seq, _, prev = heads.get(lane, (0, 0, chain.genesis_hash(lane)))
                row = (seq, lane, lane_seq + 1, *(values[name] for name in chain.CONTENT), prev)
                digest = chain.event_hash(row)
                heads[lane] = [lane_seq + 1, seq, digest]
                copy.write_row((*row, digest))
                if seq % 100_000 == 0:
                    checkpoints.append([[lane, *head] for lane, head in sorted(heads.items())])
        connection.execute(f"SELECT setval(pg_get_serial_sequence('audit_auditevent', 'seq'), {count})")
        connection.commit()
        connection.execute("ANALYZE audit_auditevent")
    for checkpoint_heads in checkpoints:
        _sign_checkpoint(heads=checkpoint_heads, using="default")
    return time.perf_counter() - started


def scan() -> int:
    from django.db import connection, transaction

    from audit import chain
    from audit.walk import BATCH, select

    rows = 0
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(select(connection.vendor), [chain.VERSION])
        while batch := cursor.fetchmany(BATCH):
            rows += len(batch)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lanes", type=int, default=8)
    args = parser.parse_args()

    with bench_database(DATABASE) as env:
        setup_django(env)
        from django.core.management import call_command
        from django.db import connection

        from audit.services import Actor, checkpoint_create, record

        print(f"PostgreSQL: {server_settings(DATABASE)}")
        took = fill(args.events, args.lanes)
        print(f"fill: {args.events:,} events in {args.lanes} lanes by COPY in {took:.1f} s")
        for n in range(5):
            record(action="policy.applied", actor=Actor(type="system", label="bench"), parameters={"n": n})
        checkpoint_create()
        peers = {"audit_verify": [], "audit_verify --workers 1": ["--workers", "1"], "scan": None}
        timings: dict[str, list[float]] = {peer: [] for peer in peers}
        cpu: dict[str, list[float]] = {peer: [] for peer in peers}
        loads = []
        for _ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for peer, options in peers.items():
                out = io.StringIO()
                t0, c0 = time.perf_counter(), time.process_time()
                if options is None:
                    scanned = scan()
                else:
                    with redirect_stdout(out):
                        call_command("audit_verify", *options, stdout=out)
                    if "audit chain OK" not in out.getvalue():
                        raise SystemExit(out.getvalue())
                    print(out.getvalue().strip())
                timings[peer].append(time.perf_counter() - t0)
                cpu[peer].append(time.process_time() - c0)
        print(f"load average (1 min) at the start of each round: {', '.join(f'{v:.1f}' for v in loads)}")
        print(f"scan read {scanned:,} rows")
        print()
        print("| peer | events | median s | runs s | events/s | main-process CPU s (median) |")
        print("|---|---:|---:|---|---:|---:|")
        for peer, values in timings.items():
            runs, middle = ", ".join(f"{v:.1f}" for v in values), median(values)
            line = f"| {peer} | {scanned:,} | {middle:.1f} | {runs} | {scanned / middle:,.0f}"
            print(f"{line} | {median(cpu[peer]):.1f} |")
        print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
        for peer in ("audit_verify", "audit_verify --workers 1"):
            print(f"{peer} / scan: {median(timings[peer]) / median(timings['scan']):.2f}")
        connection.close()


if __name__ == "__main__":
    main()
