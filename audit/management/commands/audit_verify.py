import time

from django.core.management.base import BaseCommand, CommandError

from audit.verify import verify_chain


class Command(BaseCommand):
    help = "Verify the audit log's lanes and signed checkpoints; exit 1 and name the first bad event."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="default")
        parser.add_argument(
            "--workers",
            type=int,
            choices=(1, 2),
            default=None,
            help="Processes walking the log (default: 2 for a large PostgreSQL log, else 1).",
        )

    def handle(self, *args, **options):
        started = time.perf_counter()
        report = verify_chain(using=options["database"], workers=options["workers"])
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"events: {report.events}  lanes: {len(report.lanes)}  last: #{report.last_seq}  "
            f"checkpoints: {report.checkpoints}  workers: {report.workers}  time: {elapsed:.2f}s"
        )
        if report.ok:
            self.stdout.write(self.style.SUCCESS("audit chain OK"))
            return
        for problem in report.problems:
            self.stderr.write(f"  #{problem.seq}: {problem.reason}")
        first = report.first_bad
        raise CommandError(f"audit chain BROKEN: first bad event #{first.seq}: {first.reason}")
