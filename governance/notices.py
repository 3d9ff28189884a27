"""Security notices sent to a person by email about their own account (no secrets, no codes, no links
that act)."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import timezone

from governance.models import User


def send_new_second_factor_mail(*, user_id: int, replaced: bool) -> None:
    """A second factor was added (or replaced one): tell the owner, who can react if it was not them."""
    user = User.objects.filter(pk=user_id, is_active=True).exclude(email="").first()
    if user is None:
        return
    body = render_to_string(
        "governance/email/new_second_factor.txt",
        {"user": user, "replaced": replaced, "when": timezone.now(), "issuer": settings.GATEHOUSE_ISSUER},
    )
    send_mail(
        "Gatehouse: a new second factor was added to your account",
        body,
        settings.DEFAULT_FROM_EMAIL,
        [user.email],
    )
