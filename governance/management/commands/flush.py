"""Django's flush, made to work with Gatehouse's integrity triggers on SQLite.

SQLite has no TRUNCATE: flush deletes table by table in no fixed order, and deleting the ceiling before the
grants trips the rule that an open grant's ceiling entry cannot be removed (and deleting an approval
decision trips "an approval decision is final").  The governance and approvals triggers are lifted for the
flush and restored after it (test suites with transactional tests flush after every test).  PostgreSQL
truncates, which fires no row triggers, so nothing changes there.
"""

from django.core.management.commands.flush import Command as DjangoFlush
from django.db import DEFAULT_DB_ALIAS, connections

from approvals.migrations import _triggers as approval_triggers
from governance.migrations import _triggers


class Command(DjangoFlush):
    def handle(self, **options):
        using = options.get("database") or DEFAULT_DB_ALIAS
        connection = connections[using]
        if connection.vendor != "sqlite":
            return super().handle(**options)
        _triggers.before_migrate(sender=None, using=using)
        approvals_installed = bool(approval_triggers.installed(connection))
        if approvals_installed:
            with connection.schema_editor() as editor:
                approval_triggers.uninstall(None, editor)
        try:
            return super().handle(**options)
        finally:
            _triggers.after_migrate(sender=None, using=using)
            if approvals_installed:
                with connection.schema_editor() as editor:
                    approval_triggers.install(None, editor)
