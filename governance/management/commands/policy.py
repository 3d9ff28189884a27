"""`manage.py policy apply FILE [--dry-run]` and `manage.py policy export [--organization SLUG]`."""

from django.core.management.base import BaseCommand, CommandError

from governance.models import Organization
from governance.policy import PolicyRefused, apply_file, export_yaml

EXIT_REFUSED = 1
EXIT_UNREADABLE = 2


class Command(BaseCommand):
    help = "Apply a policy file (declarative YAML) or export the current state as one."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        apply = sub.add_parser("apply", help="check a policy file whole, then apply it in one transaction")
        apply.add_argument("file")
        apply.add_argument("--dry-run", action="store_true", help="print the planned changes; write nothing")
        export = sub.add_parser("export", help="write the current state as a policy file")
        export.add_argument("--organization", help="slug of one organization (default: all)")
        export.add_argument("--output", help="file to write (default: standard output)")

    def handle(self, *args, action, **options):
        if action == "apply":
            self.apply(options["file"], dry_run=options["dry_run"])
        else:
            self.export(options.get("organization"), options.get("output"))

    def apply(self, path: str, *, dry_run: bool) -> None:
        try:
            outcome = apply_file(path, dry_run=dry_run)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}", returncode=EXIT_UNREADABLE) from None
        except PolicyRefused as refusal:
            problems = "\n  ".join(refusal.lines())
            raise CommandError(f"refused, nothing applied:\n  {problems}", returncode=EXIT_REFUSED) from None
        if not outcome.changes:
            self.stdout.write("no changes")
            return
        for change in outcome.changes:
            self.stdout.write(f"  {change.render()}")
        summary = ", ".join(f"{name} {count}" for name, count in outcome.counts.items())
        if dry_run:
            self.stdout.write(f"dry run: {len(outcome.changes)} changes planned ({summary}); nothing written")
        else:
            self.stdout.write(self.style.SUCCESS(f"applied {len(outcome.changes)} changes ({summary})"))

    def export(self, slug: str | None, output: str | None) -> None:
        organizations = None
        if slug:
            organization = Organization.objects.filter(slug=slug).first()
            if organization is None:
                raise CommandError(f"no organization {slug!r}")
            organizations = [organization]
        text = export_yaml(organizations=organizations)
        if output:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            self.stdout.write(text, ending="")
