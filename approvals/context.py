"""Template context: the signed-in person's count of requests waiting for them (the navigation badge)."""

from __future__ import annotations

from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from approvals import selectors


def pending_approvals(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    # Lazy: pages that do not show the navigation pay no query.
    return {"approvals_pending": SimpleLazyObject(lambda: selectors.pending_count(user, at=timezone.now()))}
