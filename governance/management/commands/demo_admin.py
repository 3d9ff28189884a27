"""Create (or reset) the demo admin of the default run and print its login.  Refused when DEBUG is off."""

import secrets

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from audit import services as audit
from audit.actions import Action
from governance.models import Organization, Role, User

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
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                username=USERNAME,
                defaults={"organization": org, "role": Role.ADMIN, "email": "admin@localhost"},
            )
            user.organization, user.role = org, Role.ADMIN
            user.is_staff = user.is_superuser = True
            user.is_active = True
            user.set_password(password)
            user.save()
            audit.record(
                action=Action.USER_CREATED if created else Action.USER_UPDATED,
                actor=audit.Actor(type="system", label="demo_admin command"),
                organization=org,
                target=user,
                parameters={"username": USERNAME, "demo": True},
            )
        self.stdout.write(self.style.SUCCESS("Demo admin ready:"))
        self.stdout.write(f"  url:      {settings.GATEHOUSE_ISSUER}/admin/")
        self.stdout.write(f"  username: {USERNAME}")
        self.stdout.write(f"  password: {password}")
