"""Appends from several OS processes at once keep valid lanes (SQLite and PostgreSQL)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from audit.models import AuditEvent
from audit.services import Actor, checkpoint_create, record
from audit.verify import verify_chain
from tests.audit.helpers import tamper


def append_from_processes(workers: int, each: int) -> None:
    env = {**os.environ, "AUDIT_WORKER_DB": connection.settings_dict["NAME"]}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.audit.append_worker", str(worker), str(each)],
            cwd=Path(settings.BASE_DIR),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for worker in range(workers)
    ]
    for child in children:
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err.decode()


def assert_lanes_are_contiguous(rows) -> None:
    by_lane: dict[int, list[int]] = {}
    for _, lane, lane_seq, _ in rows:
        by_lane.setdefault(lane, []).append(lane_seq)
    for positions in by_lane.values():
        assert positions == list(range(1, len(positions) + 1))  # in seq order, gap-free


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_from_processes_keep_valid_lanes():
    workers, each = 4, 50
    append_from_processes(workers, each)

    rows = list(AuditEvent.objects.order_by("seq").values_list("seq", "lane", "lane_seq", "parameters"))
    assert len(rows) == workers * each
    assert_lanes_are_contiguous(rows)
    if connection.vendor == "sqlite":
        assert {lane for _, lane, _, _ in rows} == {0}
    for worker in range(workers):  # each writer's own events keep their order
        mine = [p for *_, p in rows if f'"worker":"{worker}"' in p]
        assert mine == [f'{{"n":{n},"worker":"{worker}"}}' for n in range(each)]
    report = verify_chain()
    assert report.ok, report.problems
    assert report.events == workers * each


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_writers_spread_over_lanes_and_verify_in_two_processes():
    workers, each = 8, 40
    # This process's appends, before and after the others', all go to one lane (nothing contends for it
    # then), so that lane spans both halves of the log whatever order the child processes ran in.
    own = Actor(type="system", label="test")
    for n in range(5):
        record(action="decision.allowed", actor=own, parameters={"worker": "test", "n": n})
    append_from_processes(workers, each)
    for n in range(5, 10):
        record(action="decision.allowed", actor=own, parameters={"worker": "test", "n": n})
    checkpoint_create()

    rows = list(AuditEvent.objects.order_by("seq").values_list("seq", "lane", "lane_seq", "parameters"))
    assert len(rows) == workers * each + 10
    assert len({lane for _, lane, _, _ in rows}) > 1
    assert {lane for _, lane, _, _ in rows} <= set(range(settings.AUDIT_CHAIN_LANES))
    assert_lanes_are_contiguous(rows)
    alone, split = verify_chain(workers=1), verify_chain(workers=2)
    assert alone.ok and split.ok, (alone.problems, split.problems)
    assert (split.workers, split.events, split.lanes) == (2, alone.events, alone.lanes)

    # Delete the first event of some lane in the second half: only the merge of the halves can see the gap.
    middle = rows[0][0] + (rows[-1][0] - rows[0][0] + 1) // 2
    first_half_lanes = {lane for seq, lane, _, _ in rows if seq < middle}
    assert rows[0][1] in first_half_lanes and rows[-1][1] == rows[0][1]  # this process's lane spans both
    victim = next(row for row in rows if row[0] >= middle and row[1] in first_half_lanes)
    following = next(row for row in rows if row[1] == victim[1] and row[2] == victim[2] + 1)
    with tamper() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = %s", [victim[0]])
    alone, split = verify_chain(workers=1), verify_chain(workers=2)
    assert [(p.seq, p.reason) for p in split.problems] == [(p.seq, p.reason) for p in alone.problems]
    assert split.first_bad.seq == following[0]
    assert f"event {victim[1]}/{victim[2]} is missing" in split.first_bad.reason
