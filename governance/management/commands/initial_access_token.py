"""Issue an RFC 7591 initial access token: a registration carrying it creates an active agent."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from audit.actions import ActorType
from audit.services import Actor
from governance.models import Organization
from governance.services import initial_access_token_create


class Command(BaseCommand):
    help = "Create an initial access token for dynamic client registration (printed once, stored hashed)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("--organization", required=True, help="Organization slug.")
        create.add_argument(
            "--ceiling", default="", help="Space-separated capability keys the agent may hold."
        )
        create.add_argument("--uses", type=int, default=1)
        create.add_argument("--hours", type=int, default=24)
        create.add_argument("--label", default="")

    def handle(self, *args, action: str, **options):
        organization = Organization.objects.filter(slug=options["organization"]).first()
        if organization is None:
            raise CommandError("No such organization.")
        value, token = initial_access_token_create(
            actor=Actor(type=ActorType.SYSTEM, label="manage.py initial_access_token"),
            organization=organization,
            ceiling=options["ceiling"].split(),
            max_uses=options["uses"],
            lifetime=timedelta(hours=options["hours"]),
            label=options["label"],
        )
        self.stderr.write(
            f"initial access token #{token.pk}, {token.max_uses} use(s), expires {token.expires_at}"
        )
        self.stdout.write(value)
