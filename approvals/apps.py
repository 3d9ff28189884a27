from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self):
        # Registers the tasks with the Celery app in web processes too: services queue them by name after
        # commit (approvals.services._deliver_after_commit) without importing the tasks module.
        from approvals import tasks  # noqa: F401
