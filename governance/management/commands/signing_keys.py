"""Access-token signing keys: list them, or rotate (publish a new key now, sign with it after a delay)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from audit.actions import ActorType
from audit.services import Actor
from governance.models import SigningKey
from governance.oauth import signing_keys
from governance.services.signing_keys import signing_key_rotate


class Command(BaseCommand):
    help = "List or rotate the keys that sign access tokens (JWKS at /oauth/jwks.json)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="Show every key and its state.")
        rotate = sub.add_parser("rotate", help="Create the next key; it signs after the publish delay.")
        rotate.add_argument("--alg", choices=sorted(signing_keys.CURVES), default=None)
        rotate.add_argument("--now", action="store_true", help="Sign with the new key at once (emergency).")

    def handle(self, *args, action: str, **options):
        if action == "rotate":
            actor = Actor(type=ActorType.SYSTEM, label="manage.py signing_keys")
            key = signing_key_rotate(actor=actor, alg=options["alg"], now=options["now"])
            self.stdout.write(
                f"new key {key.kid} ({key.alg}) published; signs from {key.activated_at:%Y-%m-%d %H:%M:%S}"
            )
            return
        for key in SigningKey.objects.order_by("activated_at"):
            state = "retired" if key.retired_at else "active"
            self.stdout.write(
                f"{key.kid}  {key.alg}  activated {key.activated_at:%Y-%m-%d %H:%M:%S}  {state}"
            )
