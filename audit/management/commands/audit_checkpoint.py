from django.core.management.base import BaseCommand

from audit.services import checkpoint_create


class Command(BaseCommand):
    help = "Sign the current head of the audit chain (Celery beat does this periodically)."

    def handle(self, *args, **options):
        checkpoint = checkpoint_create()
        if checkpoint is None:
            self.stdout.write("nothing to sign: the log is empty or the head is already signed")
        else:
            self.stdout.write(f"signed checkpoint at #{checkpoint.seq} with key {checkpoint.key_id}")
