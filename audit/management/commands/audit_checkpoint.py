from django.core.management.base import BaseCommand

from audit.services import checkpoint_create


class Command(BaseCommand):
    help = "Sign the current heads of the audit log's lanes (Celery beat does this periodically)."

    def handle(self, *args, **options):
        checkpoint = checkpoint_create()
        if checkpoint is None:
            self.stdout.write("nothing to sign: the log is empty or unchanged since the last checkpoint")
        else:
            lanes = len(checkpoint.heads_list)
            self.stdout.write(
                f"signed checkpoint of {checkpoint.events} events in {lanes} lane(s), "
                f"up to #{checkpoint.seq}, with key {checkpoint.key_id}"
            )
