"""Appends from several OS processes at once keep one valid chain (SQLite and PostgreSQL)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from audit.models import AuditEvent
from audit.verify import verify_chain

WORKERS, EACH = 4, 50


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_from_processes_keep_one_chain():
    env = {**os.environ, "AUDIT_WORKER_DB": connection.settings_dict["NAME"]}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.audit.append_worker", str(worker), str(EACH)],
            cwd=Path(settings.BASE_DIR),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for worker in range(WORKERS)
    ]
    for child in children:
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err.decode()

    rows = list(AuditEvent.objects.order_by("seq").values_list("seq", "parameters"))
    assert [seq for seq, _ in rows] == list(range(1, WORKERS * EACH + 1))
    for worker in range(WORKERS):  # each writer's own events keep their order
        mine = [p for _, p in rows if f'"worker":"{worker}"' in p]
        assert mine == [f'{{"n":{n},"worker":"{worker}"}}' for n in range(EACH)]
    report = verify_chain()
    assert report.ok, report.problems
    assert report.events == WORKERS * EACH
