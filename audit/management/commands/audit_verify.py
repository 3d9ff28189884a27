import time

from django.core.management.base import BaseCommand, CommandError

from audit.verify import verify_chain


class Command(BaseCommand):
    help = "Verify the audit hash chain and its signed checkpoints; exit 1 and name the first bad event."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="default")

    def handle(self, *args, **options):
        started = time.perf_counter()
        report = verify_chain(using=options["database"])
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"events: {report.events}  last: #{report.last_seq} {report.last_hash[:16]}…  "
            f"checkpoints: {report.checkpoints}  time: {elapsed:.2f}s"
        )
        if report.ok:
            self.stdout.write(self.style.SUCCESS("audit chain OK"))
            return
        for problem in sorted(report.problems, key=lambda p: p.seq):
            self.stderr.write(f"  #{problem.seq}: {problem.reason}")
        first = report.first_bad
        raise CommandError(f"audit chain BROKEN: first bad event #{first.seq}: {first.reason}")
