"""Celery tasks of the governance app: thin, idempotent wrappers that fetch by id and call one function."""

from __future__ import annotations

from celery import shared_task

from governance.notices import send_new_second_factor_mail


@shared_task(name="governance.tasks.send_new_second_factor_notice")
def send_new_second_factor_notice(user_id: int, replaced: bool) -> None:
    """Tell a person by email that a second factor was added to their account (queued after commit)."""
    send_new_second_factor_mail(user_id=user_id, replaced=replaced)
