"""Create (or reset) the demo admin of the default run and print its login.  Refused when DEBUG is off."""

import secrets

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.actions import ActorType
from audit.services import Actor
from governance import services
from governance.models import Organization

USERNAME = "demo-admin"


class Command(BaseCommand):
    help = "Create the demo admin for the default run and print its username and a fresh password."

    def add_arguments(self, parser):
        parser.add_argument(
            "--organization", default="clinic", help="slug of the organization it administers"
        )

    def handle(self, *args, organization, **options):
        if not settings.DEBUG:
            raise CommandError("demo_admin is for the default (DEBUG) run only.")
        org = Organization.objects.filter(slug=organization).first()
        if org is None:
            raise CommandError(f"No organization {organization!r}; apply a policy file first.")
        password = secrets.token_urlsafe(12)
        services.demo_admin_ensure(
            actor=Actor(type=ActorType.SYSTEM, label="demo_admin command"),
            organization=org,
            username=USERNAME,
            password=password,
        )
        self.stdout.write(self.style.SUCCESS("Demo admin ready:"))
        self.stdout.write(f"  url:      {settings.GATEHOUSE_ISSUER}/admin/")
        self.stdout.write(f"  username: {USERNAME}")
        self.stdout.write(f"  password: {password}")
