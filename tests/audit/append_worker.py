"""Child process for the concurrency test and the append benchmark: append events to the audit chain.

Usage: ``python -m tests.audit.append_worker <worker> <count>`` with ``AUDIT_WORKER_DB`` naming the
database (the test database of the parent) and the parent's DATABASE_URL / GATEHOUSE_VAR_DIR.
Each event is its own transaction, as in the services.
"""

import os
import sys

import django


def main() -> None:
    worker, count = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = os.environ["AUDIT_WORKER_DB"]
    django.setup()
    from audit.services import Actor, record

    actor = Actor(type="system", label=f"worker-{worker}")
    for n in range(count):
        record(action="decision.allowed", actor=actor, parameters={"worker": worker, "n": n})


if __name__ == "__main__":
    main()
