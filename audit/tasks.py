from celery import shared_task

from audit.services import checkpoint_create


@shared_task(name="audit.tasks.create_checkpoint")
def create_checkpoint() -> int | None:
    checkpoint = checkpoint_create()
    return None if checkpoint is None else checkpoint.events
