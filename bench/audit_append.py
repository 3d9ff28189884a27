"""Append throughput of the audit log on PostgreSQL, 1 and 8 concurrent writer processes.

    .venv/bin/python bench/audit_append.py [--rounds 5] [--events 2000] [--writers 1 8] [--lanes 1 8]

Creates and drops the database ``gh_bench_audit`` on 127.0.0.1:5432.  Each writer is an OS process with
its own connection (Django, DEBUG off); every event is its own transaction with a durable commit
(``synchronous_commit=on``), as in the services.  Rounds of the peers are interleaved; a round appends
``--events`` events split over the writers.  Figures: median events/s over the rounds (min–max), p50/p99
latency of one append (transaction included) over all rounds.

Peers, same rows, same Python-side cleaning:

* ``plain``: no chain: INSERT into a copy of the table (same indexes; seq from its identity), COMMIT.
* ``lanes-N``: ``audit.services.record()`` with ``AUDIT_CHAIN_LANES=N``: one call of audit_append() (pick a
  free lane, read its head, hash, insert), then COMMIT.  ``lanes-1`` is the old single-chain behaviour: every
  append waits for the previous one's COMMIT, WAL flush included.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.audit_common import bench_database, median, percentile, server_settings, setup_django  # noqa: E402

DATABASE = "gh_bench_audit"


def _init(env: dict[str, str]) -> None:
    setup_django(env)


def _parameters(n: int) -> dict:
    return {"tool": "records.read", "patient_id": 1234, "n": n, "checks": ["token", "scope", "user", "rate"]}


def _append_batch(args: tuple[str, int]) -> tuple[int, int, list[int]]:
    peer, count = args
    from django.conf import settings
    from django.db import connection, transaction

    from audit import chain
    from audit.services import Actor, event_values, record

    actor = Actor(type="agent", id="7", label="bench-agent")
    if peer.startswith("lanes-"):
        settings.AUDIT_CHAIN_LANES = int(peer.removeprefix("lanes-"))
    latencies = []
    started = time.perf_counter_ns()
    for n in range(count):
        t0 = time.perf_counter_ns()
        kwargs = {"action": "decision.allowed", "actor": actor, "capabilities": ["records.read_own"]}
        if peer == "plain":
            values = event_values(**kwargs, parameters=_parameters(n))
            content = tuple(values[name] for name in chain.CONTENT)
            digest = hashlib.sha256((chain.content_body(content) + uuid.uuid4().hex).encode()).hexdigest()
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_PLAIN_INSERT, [*content, "", digest])
        else:
            record(**kwargs, parameters=_parameters(n))
        latencies.append(time.perf_counter_ns() - t0)
    return started, time.perf_counter_ns(), latencies


_COLUMNS = (
    "occurred_at",
    "action",
    "result",
    "actor_type",
    "actor_id",
    "actor_label",
    "organization_id",
    "agent_id",
    "agent_label",
    "on_behalf_of_id",
    "on_behalf_of_label",
    "target_type",
    "target_id",
    "target_label",
    "capabilities",
    "parameters",
    "request_id",
    "client_ip",
    "prev_hash",
    "hash",
)
_PLAIN_INSERT = (
    f"INSERT INTO bench_plain (lane, lane_seq, {', '.join(_COLUMNS)}) "  # noqa: S608
    f"VALUES (0, nextval('bench_plain_position'), {', '.join(['%s'] * len(_COLUMNS))})"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=2000, help="events per round, split over the writers")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--lanes", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    peers = ("plain", *(f"lanes-{n}" for n in args.lanes))

    with bench_database(DATABASE) as env:
        setup_django(env)
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE bench_plain (LIKE audit_auditevent INCLUDING ALL)")
            cursor.execute("CREATE SEQUENCE bench_plain_position")
        connection.close()
        print(f"PostgreSQL: {server_settings(DATABASE)}")
        print(f"load average at the start: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
        results: dict[tuple[str, int], dict] = {}
        context = multiprocessing.get_context("spawn")
        with context.Pool(max(args.writers), initializer=_init, initargs=(env,)) as pool:
            pool.map(_append_batch, [("plain", 5)] * max(args.writers))  # warm up every connection
            for _ in range(args.rounds):
                for writers in args.writers:
                    for peer in peers:
                        batches = pool.map(_append_batch, [(peer, args.events // writers)] * writers)
                        start = min(b[0] for b in batches)
                        end = max(b[1] for b in batches)
                        total = sum(len(b[2]) for b in batches)
                        slot = results.setdefault((peer, writers), {"rates": [], "latencies": []})
                        slot["rates"].append(total / ((end - start) / 1e9))
                        for b in batches:
                            slot["latencies"].extend(b[2])
        from audit.verify import verify_chain

        report = verify_chain()
        print(
            f"log after the run: {report.events} events in {len(report.lanes)} lanes, "
            f"{'OK' if report.ok else report.problems[:3]}"
        )
        print()
        print("| peer | writers | events/s (median) | min–max | p50 ms | p99 ms | vs plain |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for writers in args.writers:
            base = median(results[("plain", writers)]["rates"])
            for peer in peers:
                slot = results[(peer, writers)]
                rate = median(slot["rates"])
                lat = [v / 1e6 for v in slot["latencies"]]
                spread = f"{min(slot['rates']):,.0f}–{max(slot['rates']):,.0f}"
                print(
                    f"| {peer} | {writers} | {rate:,.0f} | {spread} "
                    f"| {percentile(lat, 0.5):.2f} | {percentile(lat, 0.99):.2f} | {rate / base:.2f} |"
                )
        print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
        connection.close()


if __name__ == "__main__":
    main()
