"""One client-credentials issuance under the microscope: every query it sends, and where the CPU goes.

    .venv/bin/python bench/issuance_profile.py [--tokens 200] [--profile] [--peer vanilla-fast]

In process (Django test client, no HTTP server), with the same production-like settings the HTTP bench
gives Gatehouse (DEBUG off, PostgreSQL on 127.0.0.1:5432 in a throwaway database, Redis db 14 for the jti
replay cache).  Prints the SQL of one issuance (after warm-up, so per-process caches are warm as in a
served worker), then the mean wall time per token over ``--tokens`` requests; ``--profile`` adds the top of
a cProfile listing.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import token_issuance as bench  # noqa: E402

FORM = "application/x-www-form-urlencoded"


def measure(opts) -> None:
    import django

    if os.environ.get("PROFILE_MIDDLEWARE"):  # e.g. "0,1": only these entries of MIDDLEWARE (an experiment)
        from django.conf import settings

        keep = [int(i) for i in os.environ["PROFILE_MIDDLEWARE"].split(",")]
        settings.MIDDLEWARE = [settings.MIDDLEWARE[i] for i in keep]
    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    if opts.peer == "gatehouse":
        creds, token_url, make = bench.setup_gatehouse(), "/oauth/token/", bench.gatehouse_bodies
    else:
        creds, token_url, make = bench.setup_vanilla(), "/o/token/", bench.vanilla_bodies
    client = Client(HTTP_HOST="127.0.0.1")
    bodies = iter(make(creds, opts.tokens + 20, token_url))

    def issue() -> None:
        data, headers = next(bodies)
        # Form-encoded, as OAuth clients (and the HTTP bench) send it; the test client would send multipart.
        body = urlencode(data)
        response = client.post(token_url, data=body, content_type=FORM, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"issuance failed: {response.status_code} {response.content[:300]!r}")

    for _ in range(10):  # warm-up: imports, connection, signing key, per-process caches
        issue()
    with CaptureQueriesContext(connection) as captured:
        issue()
    print(f"queries in one issuance: {len(captured.captured_queries)}")
    for number, query in enumerate(captured.captured_queries, 1):
        sql = query["sql"] or "(prepared statement)"  # a server-side bound statement logs no text
        print(f"{number:3d}. {sql[: int(os.environ.get('PROFILE_SQL_WIDTH', '160'))]}")
    # PROFILE_CPU=1 times the profile in CPU seconds of this process, so waits on PostgreSQL/Redis drop out.
    timer = (time.process_time,) if os.environ.get("PROFILE_CPU") else ()
    profiler = cProfile.Profile(*timer) if opts.profile else None
    if os.environ.get("PYINSTRUMENT"):
        from pyinstrument import Profiler

        sampler = Profiler(interval=0.0005)
        sampler.start()
        for _ in range(opts.tokens):
            issue()
        sampler.stop()
        print(sampler.output_text(unicode=False, color=False, show_all=False))
        return
    started, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    for _ in range(opts.tokens):
        issue()
    if profiler:
        profiler.disable()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"\n{opts.tokens} tokens: {1000 * elapsed / opts.tokens:.1f} ms wall, "
        f"{1000 * cpu / opts.tokens:.1f} ms CPU of this process per token (one thread)"
    )
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}")
    if profiler:
        stats = pstats.Stats(profiler).sort_stats(os.environ.get("PROFILE_SORT", "cumulative"))
        stats.print_stats(int(os.environ.get("PROFILE_LINES", "45")))
        if os.environ.get("PROFILE_CALLERS"):  # e.g. PROFILE_CALLERS=deepcopy: who calls it, how often
            stats.print_callers(os.environ["PROFILE_CALLERS"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--peer", choices=["gatehouse", "vanilla-fast"], default="gatehouse")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.inside:
        measure(opts)
        return
    peer = next(p for p in bench.peers() if p.name == opts.peer)
    database = f"gh_bench_profile_{os.getpid()}"
    env = bench.peer_env(peer, database, tempfile.mkdtemp(prefix="gh-profile-"))
    bench.admin_sql(f'DROP DATABASE IF EXISTS "{database}"')
    bench.admin_sql(f'CREATE DATABASE "{database}"')
    try:
        bench.run([bench.PYTHON, "-m", "django", "migrate", "--noinput"], env)
        args = [bench.PYTHON, __file__, "--inside", "--tokens", str(opts.tokens), "--peer", opts.peer]
        subprocess.run(args + (["--profile"] if opts.profile else []), env=env, cwd=ROOT, check=True)
    finally:
        bench.admin_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
