"""The default run's mail backend: each message to the console and, as an .eml file, to a folder that the
development outbox page (DEBUG only) lists, so a person trying Gatehouse can read approval emails and click
their links.  Production refuses it (config.env.refuse_insecure_production)."""

from __future__ import annotations

import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from django.conf import settings
from django.core.mail.backends.console import EmailBackend as ConsoleBackend
from django.utils import timezone

MAX_LISTED = 200


def outbox_dir() -> Path:
    return Path(settings.GATEHOUSE_DEV_OUTBOX_DIR)


class OutboxEmailBackend(ConsoleBackend):
    def send_messages(self, email_messages):
        folder = outbox_dir()
        folder.mkdir(parents=True, exist_ok=True)
        for message in email_messages:
            stamp = timezone.now().strftime("%Y%m%dT%H%M%S%f")
            path = folder / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
            path.write_bytes(message.message().as_bytes())
        return super().send_messages(email_messages)


def saved_messages() -> list[tuple[str, EmailMessage]]:
    """(file name, message) of the saved mail, newest first."""
    folder = outbox_dir()
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.eml"), reverse=True)[:MAX_LISTED]
    return [(f.name, message_from_bytes(f.read_bytes(), policy=policy.default)) for f in files]
