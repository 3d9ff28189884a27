"""Portal pages: thin views over selectors and services."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from governance.models import Grant


@login_required
def home(request):
    # Only the signed-in user's own grants: nothing here reveals another user's data.
    grants = (
        Grant.objects.active()
        .filter(user=request.user)
        .select_related("agent", "capability__tool_server")
        .order_by("agent__name", "capability__key")
    )
    return render(request, "governance/home.html", {"grants": grants})
