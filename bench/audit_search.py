"""Audit search on PostgreSQL at 1M or 5M events: p50/p95 of the common filters, and export memory.

    .venv/bin/python bench/audit_search.py [--events 1000000] [--rounds 20] [--export-rows 1000000] [--keep]

Creates ``gh_audit_bench`` on 127.0.0.1:5432, migrates it, fills it with SQL ``generate_series`` and
drops it at the end (``--keep`` leaves it, and a later run with ``--reuse`` skips the fill).

The fill respects the chain only as far as the search needs: ``seq`` 1..N, spread over 8 lanes with
gap-free ``lane_seq`` (so lane heads and counts work), unique placeholder hashes, but no real links:
the rows do not verify, which the search never asks.  Ten organizations with 20 agents and 500 users each;
``occurred_at`` spans 90 days in ``seq`` order; 5 % denied, 2 % failed; three events per request id; the
parameters name an audience, a tool and one of a million patient ids.  The migration's indexes are
dropped for the load and rebuilt after it (as a restore would), then ANALYZE.

Timed, per case, ``--rounds`` times after two warm-ups: the whole read path of the screen and the API
short of rendering: bind the FilterSet, validate, look up the page's start event (keyset), fetch one page
of 50.  Viewer: an auditor of organization 1 (10 % of the events), except the superuser cases.  A deep
page starts after the event at the given depth in the results.  Peer: the same page fetched with
``OFFSET`` (what a page-numbered list does), in the same process, ``--peer-rounds`` times.  Each case also
prints PostgreSQL's own execution time of the page query (``EXPLAIN ANALYZE``, once) and the indexes its
plan reads.

Export: a child process streams ``--export-rows`` events through the CSV writer the view uses (superuser,
a time range holding that many events) and reports its peak RSS (``VmHWM``) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.audit_common import (  # noqa: E402
    PG,
    ROOT,
    admin_sql,
    django_env,
    median,
    percentile,
    server_settings,
    setup_django,
)

DATABASE = "gh_audit_bench"
ORGS, AGENTS_PER_ORG, USERS_PER_ORG, LANES = 10, 20, 500, 8
START = "2026-09-01 00:00:00+00"
SPAN_DAYS = 90
CHUNK = 1_000_000

FILL = f"""
INSERT INTO audit_auditevent (seq, lane, lane_seq, occurred_at, action, result, actor_type, actor_id,
    actor_label, organization_id, agent_id, agent_label, on_behalf_of_id, on_behalf_of_label, target_type,
    target_id, target_label, capabilities, parameters, request_id, client_ip, prev_hash, hash)
SELECT i + 1, i %% {LANES}, i / {LANES} + 1,
    timestamptz '{START}' + (i::float8 / %(total)s * {SPAN_DAYS}) * interval '1 day',
    (ARRAY['decision.allowed','decision.allowed','decision.allowed','token.issued','token.exchanged',
           'decision.denied','grant.created','token.introspected','token.refreshed','consent.given'])
        [1 + (i * 31) %% 10],
    CASE WHEN i %% 20 = 3 THEN 'denied' WHEN i %% 50 = 7 THEN 'failure' ELSE 'success' END,
    'agent', (o + {ORGS} * ((i / {ORGS}) %% {AGENTS_PER_ORG}))::text,
    'agent-' || (o + {ORGS} * ((i / {ORGS}) %% {AGENTS_PER_ORG})),
    o, o + {ORGS} * ((i / {ORGS}) %% {AGENTS_PER_ORG}),
    'agent-' || (o + {ORGS} * ((i / {ORGS}) %% {AGENTS_PER_ORG})),
    o + {ORGS} * ((i * 7 / {ORGS}) %% {USERS_PER_ORG}),
    'user-' || (o + {ORGS} * ((i * 7 / {ORGS}) %% {USERS_PER_ORG})),
    '', '', '',
    CASE WHEN i %% 3 = 0 THEN 'appointments.cancel records.read_own' ELSE 'records.read_own' END,
    '{{"audience":"https://records-' || o || '.example/mcp","patient_id":"p-' || ((i * 7919) %% 1000000)
        || '","tool":"read_record"}}',
    md5((i / 3)::text),
    ('10.0.' || (i %% 250) || '.' || (i %% 200 + 1))::inet,
    repeat('0', 64), md5(i::text) || md5('x' || i::text)
FROM generate_series(%(low)s::bigint, %(high)s::bigint - 1) AS g(i),
    LATERAL (SELECT (i / 7) %% {ORGS} + 1 AS o) AS org
"""


def fill(total: int) -> dict[str, float]:
    import psycopg

    timings = {}
    with psycopg.connect(f"{PG}/{DATABASE}", autocommit=True) as connection:
        connection.execute("SET maintenance_work_mem = '256MB'")
        indexes = connection.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'audit_auditevent' AND indexname "
            "NOT IN ('audit_auditevent_pkey', 'audit_lane_position', 'audit_auditevent_hash_key')"
        ).fetchall()
        for name, _ in indexes:
            connection.execute(f"DROP INDEX {name}")
        started = time.perf_counter()
        for low in range(0, total, CHUNK):
            connection.execute(FILL, {"total": total, "low": low, "high": min(total, low + CHUNK)})
            print(f"  filled {min(total, low + CHUNK):,} events", flush=True)
        timings["insert"] = time.perf_counter() - started
        started = time.perf_counter()
        for name, definition in indexes:
            begun = time.perf_counter()
            connection.execute(definition)
            print(f"  index {name}: {time.perf_counter() - begun:.1f} s", flush=True)
        timings["indexes"] = time.perf_counter() - started
        connection.execute("SELECT setval(pg_get_serial_sequence('audit_auditevent', 'seq'), %s)", [total])
        started = time.perf_counter()
        connection.execute("VACUUM ANALYZE audit_auditevent")
        timings["analyze"] = time.perf_counter() - started
        size = connection.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('audit_auditevent'))"
        ).fetchone()
        timings["size"] = size[0]
    return timings


def cases(total: int) -> list[tuple[str, str, dict, int]]:
    """(name, viewer, filters, depth): depth 0 is the first page."""
    end_ts = f"2026-{9 + SPAN_DAYS // 30:02d}-30T00:00:00+00:00"
    week = "2026-11-23T00:00:00+00:00"
    return [
        ("agent + last 7 days", "auditor", {"agent": 1, "since": week, "until": end_ts}, 0),
        ("agent + last 7 days, deep", "auditor", {"agent": 1, "since": week, "until": end_ts}, 300),
        ("agent, deep", "auditor", {"agent": 1}, total // (ORGS * AGENTS_PER_ORG) * 4 // 5),
        ("denied only", "auditor", {"result": "denied"}, 0),
        ("denied only, deep", "auditor", {"result": "denied"}, total // ORGS // 20 * 4 // 5),
        ("free text, rare", "auditor", {"q": "PATIENT"}, 0),
        ("free text, common", "auditor", {"q": "read_record"}, 0),
        ("free text, common, deep", "auditor", {"q": "read_record"}, total // ORGS // 10),
        ("request id", "auditor", {"request_id": "REQUEST"}, 0),
        ("no filter, deep", "auditor", {}, total // ORGS // 2),
        ("superuser: denied only", "superuser", {"result": "denied"}, 0),
        ("superuser: denied only, deep", "superuser", {"result": "denied"}, total // 20 // 2),
        ("superuser: agent + time range", "superuser", {"agent": 7, "since": week}, 0),
    ]


def keyset_search(query, reader, after_seq: int | None) -> list:
    """What the screen and the API do for one page: bind, validate, find the start, fetch 50."""
    from audit.filters import AuditEventFilter
    from audit.selectors import event_for, events_visible_to, keyset_page

    filterset = AuditEventFilter(query, queryset=events_visible_to(reader), reader=reader)
    assert filterset.is_valid()
    after = event_for(reader, after_seq) if after_seq else None
    return keyset_page(filterset.qs, newest_first=True, after=after, size=50).events


def offset_search(query, reader, depth: int) -> list:
    """The peer: the same page by OFFSET."""
    from audit.filters import AuditEventFilter
    from audit.selectors import events_visible_to

    filterset = AuditEventFilter(query, queryset=events_visible_to(reader), reader=reader)
    assert filterset.is_valid()
    return list(filterset.qs[depth : depth + 51])


def database_ms(query, reader, after_seq: int | None) -> tuple[float, str]:
    """PostgreSQL's own execution time of the page query (EXPLAIN ANALYZE) and the index it starts from."""
    from django.db import connection

    from audit.filters import AuditEventFilter
    from audit.selectors import event_for, events_visible_to, keyset_query

    filterset = AuditEventFilter(query, queryset=events_visible_to(reader), reader=reader)
    assert filterset.is_valid()
    after = event_for(reader, after_seq) if after_seq else None
    page = keyset_query(filterset.qs, newest_first=True, after=after, size=50)
    sql, params = page.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    indexes, nodes = [], [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        if "Index Name" in node:
            indexes.append(node["Index Name"])
        nodes.extend(node.get("Plans", []))
    return plan[0]["Execution Time"], "+".join(sorted(set(indexes))) or "no index"


def timed(fn, rounds: int) -> tuple[list[float], int]:
    for _ in range(2):
        fn()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        page = fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples, len(page)


def run_searches(total: int, rounds: int, peer_rounds: int) -> list[dict]:
    from django.db import connection
    from django.http import QueryDict

    from audit.access import AuditReader
    from audit.filters import AuditEventFilter
    from audit.selectors import events_visible_to

    readers = {"auditor": AuditReader(organization_id=1), "superuser": AuditReader(organization_id=None)}
    with connection.cursor() as cursor:  # a request id and a patient id of organization 1
        cursor.execute(
            "SELECT request_id, parameters FROM audit_auditevent WHERE seq > %s AND organization_id = 1 "
            "ORDER BY seq LIMIT 1",
            [total // 2],
        )
        request_id, parameters = cursor.fetchone()
        patient = json.loads(parameters)["patient_id"]
    results = []
    for name, viewer, filters, depth in cases(total):
        reader = readers[viewer]
        query = QueryDict(mutable=True)
        for key, value in filters.items():
            query[key] = {"REQUEST": request_id, "PATIENT": patient}.get(value, str(value))
        base = AuditEventFilter(query, queryset=events_visible_to(reader), reader=reader)
        assert base.is_valid(), base.errors
        after_seq = None
        if depth:
            row = base.qs.values_list("seq", flat=True)[depth - 1 : depth]
            after_seq = row[0] if row else None

        if depth and after_seq is None:
            print(f"{name:32} skipped: fewer than {depth:,} results", flush=True)
            continue
        keyset = partial(keyset_search, query, reader, after_seq)
        offset = partial(offset_search, query, reader, depth)
        samples, found = timed(keyset, rounds)
        peer, _ = timed(offset, peer_rounds) if depth else (None, None)
        executed, index = database_ms(query, reader, after_seq)
        if depth:
            assert [e.seq for e in keyset()] == [e.seq for e in offset()][:50], name
        results.append(
            {"case": name, "depth": depth, "rows": found, "samples": samples, "offset": peer, "db": executed}
        )
        line = (
            f"{name:32} depth {depth:>8,}  rows {found:>3}  p50 {median(samples):8.1f} ms  "
            f"p95 {percentile(samples, 0.95):8.1f}  p99 {percentile(samples, 0.99):8.1f}  "
            f"range {min(samples):.1f}-{max(samples):.1f}  database {executed:.2f} ms ({index})"
        )
        if peer:
            line += (
                f"  | OFFSET p50 {median(peer):8.1f} ms  keyset/OFFSET {median(samples) / median(peer):.3f}"
            )
        print(line, flush=True)
    return results


EXPORT_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import django
django.setup()
from django.http import QueryDict
from audit import export
from audit.access import AuditReader
from audit.filters import AuditEventFilter
from audit.selectors import events_visible_to
reader = AuditReader(organization_id=None)
query = QueryDict(mutable=True)
query["until"] = sys.argv[2]
filterset = AuditEventFilter(query, queryset=events_visible_to(reader), reader=reader)
assert filterset.is_valid(), filterset.errors
list(export.csv_lines(filterset.qs[:10]))  # warm: imports, connection
before = hwm()
started = time.perf_counter()
rows = size = 0
for chunk in export.csv_lines(filterset.qs):
    size += len(chunk.encode())
    rows += chunk.count("\r\n")
elapsed = time.perf_counter() - started
result = {"rows": rows - 1, "bytes": size, "seconds": elapsed, "hwm_before": before, "hwm_after": hwm()}
print(json.dumps(result))
"""


def run_export(env: dict[str, str], total: int, rows: int) -> dict:
    # occurred_at is linear in seq: the time range [start, until) holds the first ``rows`` events.
    from datetime import datetime, timedelta

    start = datetime.fromisoformat(START.replace(" ", "T"))
    until = start + timedelta(days=SPAN_DAYS) * (min(rows, total) / total)
    child = subprocess.run(
        [sys.executable, "-c", EXPORT_CHILD, str(ROOT), until.isoformat()],
        env={**os.environ, **env},
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(child.stdout.strip().splitlines()[-1])
    rows, seconds, before, after = (
        result["rows"],
        result["seconds"],
        result["hwm_before"],
        result["hwm_after"],
    )
    print(
        f"export CSV: {rows:,} rows, {result['bytes'] / 2**20:.0f} MiB in {seconds:.1f} s "
        f"({rows / seconds:,.0f} rows/s); peak RSS {before:.0f} MiB before, {after:.0f} MiB after "
        f"(+{after - before:.0f} MiB)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--peer-rounds", type=int, default=5, help="rounds of the OFFSET peer")
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="leave the database for a later --reuse")
    parser.add_argument("--reuse", action="store_true", help="use the database a --keep run left")
    parser.add_argument("--skip-export", action="store_true")
    args = parser.parse_args()

    env = django_env(f"{PG}/{DATABASE}")
    if not args.reuse:
        admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin_sql(f'CREATE DATABASE "{DATABASE}"')
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
        )
    try:
        print(f"PostgreSQL: {server_settings(DATABASE)}", flush=True)
        if not args.reuse:
            timings = fill(args.events)
            print(
                f"fill: {args.events:,} events inserted in {timings['insert']:.1f} s, indexes built in "
                f"{timings['indexes']:.1f} s, VACUUM ANALYZE {timings['analyze']:.1f} s; table + indexes "
                f"{timings['size']}",
                flush=True,
            )
        setup_django(env)
        print(f"load average before the searches: {Path('/proc/loadavg').read_text().split()[0]}", flush=True)
        run_searches(args.events, args.rounds, args.peer_rounds)
        if not args.skip_export:
            print(
                f"load average before the export: {Path('/proc/loadavg').read_text().split()[0]}", flush=True
            )
            run_export(env, args.events, args.export_rows)
    finally:
        if not args.keep:
            admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


if __name__ == "__main__":
    main()
