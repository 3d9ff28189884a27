"""Issue a tool server's client secret (client_secret_basic or client_secret_post), printed once."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.actions import ActorType
from audit.services import Actor
from governance import services
from governance.models import ToolServer
from governance.services.tool_servers import SECRET_METHODS


class Command(BaseCommand):
    help = (
        "Issue a new client secret for a tool server and print it once (stored hashed; the previous secret "
        "stops working). With --method, first switch the tool server to that secret method."
    )

    def add_arguments(self, parser):
        parser.add_argument("--organization", required=True, help="Organization slug.")
        parser.add_argument("--name", required=True, help="The tool server's name.")
        parser.add_argument("--method", choices=sorted(SECRET_METHODS), help="Switch to this method first.")

    def handle(self, *args, organization: str, name: str, method: str | None, **options):
        actor = Actor(type=ActorType.SYSTEM, label="manage.py tool_server_secret")
        server = ToolServer.objects.filter(organization__slug=organization, name=name).first()
        if server is None:
            raise CommandError("No such tool server in that organization.")
        if method is not None and (server.application is None or server.token_endpoint_auth_method != method):
            services.tool_server_set_credentials(
                actor=actor, tool_server=server, token_endpoint_auth_method=method
            )
        secret = services.tool_server_issue_secret(actor=actor, tool_server=server)
        self.stderr.write(
            f"client_id {server.application.client_id} ({server.token_endpoint_auth_method}); "
            "the secret below is shown once"
        )
        self.stdout.write(secret)
