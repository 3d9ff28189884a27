from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"

    def ready(self):
        # SQLite rebuilds tables in migrations; the integrity triggers are taken down and put back around it.
        from django.db.models.signals import post_migrate, pre_migrate

        from governance.migrations import _triggers

        pre_migrate.connect(_triggers.before_migrate, sender=self, dispatch_uid="governance_triggers_down")
        post_migrate.connect(_triggers.after_migrate, sender=self, dispatch_uid="governance_triggers_up")

        # Any login records the password level and auth_time in the session (governance.auth_levels).
        from governance import auth_levels  # noqa: F401
