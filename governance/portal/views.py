"""Portal pages: thin views that read through selectors and write through services.

Objects of another organization answer 404 exactly like missing ones; a role that may not open a page
gets the 403 page.  Domain errors from a service become a plain sentence in a message.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from approvals.policy import grant_needs_second_admin
from approvals.services import grant_request_create
from governance import auth_levels, selectors, services
from governance.errors import GovernanceError
from governance.mfa.guards import is_fresh, step_up_response
from governance.models import RiskLevel
from governance.models.agents import AgentStatus
from governance.portal import access, charts
from governance.portal import selectors as portal
from governance.portal.forms import (
    EXPIRY_PRESETS,
    CeilingForm,
    ChooseAgentForm,
    GrantForm,
    OptionalReasonForm,
    ReasonForm,
)

administer = access.requires(access.can_administer)


# --- dashboard -----------------------------------------------------------------------------------------


@administer
def dashboard(request: HttpRequest) -> HttpResponse:
    viewer = request.user
    return render(
        request,
        "portal/dashboard.html",
        {
            "pending": portal.pending_approvals(viewer),
            "alerts": portal.alerts_for(viewer),
            "agents_by_status": [
                (status, label, count)
                for (status, label), count in zip(
                    AgentStatus.choices, portal.agents_by_status(viewer).values(), strict=True
                )
            ],
            "expiring": portal.grants_expiring(viewer),
            "chart": charts.decisions_chart(portal.decisions_by_day(viewer)),
        },
    )


# --- agents --------------------------------------------------------------------------------------------


@administer
def agent_list(request: HttpRequest) -> HttpResponse:
    agents = selectors.agents_visible_to(request.user).order_by("name")
    return render(request, "portal/agent_list.html", {"agents": agents})


def _agent(request: HttpRequest, pk: int):
    return get_object_or_404(selectors.agents_visible_to(request.user), pk=pk)


@administer
def agent_detail(request: HttpRequest, pk: int) -> HttpResponse:
    agent = _agent(request, pk)
    viewer = request.user
    return render(
        request,
        "portal/agent_detail.html",
        {
            "agent": agent,
            "grants": portal.agent_grants(viewer, agent),
            "tokens": portal.live_tokens(viewer, agent),
            "activity": portal.agent_activity(viewer, agent),
            "blast": portal.blast_radius(viewer, agent),
            "ceiling": agent.ceiling.select_related("tool_server").order_by("tool_server__name", "key"),
        },
    )


@administer
@require_http_methods(["GET", "POST"])
def agent_suspend(request: HttpRequest, pk: int) -> HttpResponse:
    """The kill switch: a confirmation page, then every token of the agent stops working at once.

    Taking an agent out of service needs a fresh second factor, as in the admin (one rule:
    ``auth_levels.agent_transition_needs_step_up``).
    """
    agent = _agent(request, pk)
    if auth_levels.agent_transition_needs_step_up(AgentStatus.SUSPENDED):
        refusal = step_up_response(request)
        if refusal is not None:
            return refusal
    form = ReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.agent_suspend(actor=request.user, agent=agent, reason=form.cleaned_data["reason"])
        except GovernanceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{agent.name} is suspended; every token it held stopped working.")
        return redirect("portal:agent", pk=agent.pk)
    return render(
        request,
        "portal/agent_suspend.html",
        {
            "agent": agent,
            "form": form,
            "tokens": portal.live_tokens(request.user, agent),
        },
    )


@administer
@require_POST
def agent_reactivate(request: HttpRequest, pk: int) -> HttpResponse:
    agent = _agent(request, pk)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the agent may act again.")
        return redirect("portal:agent", pk=agent.pk)
    try:
        services.agent_reactivate(actor=request.user, agent=agent, reason=form.cleaned_data["reason"])
    except GovernanceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{agent.name} is active again. It holds no token until it asks anew.")
    return redirect("portal:agent", pk=agent.pk)


@administer
@require_http_methods(["GET", "POST"])
def agent_ceiling(request: HttpRequest, pk: int) -> HttpResponse:
    """Edit the ceiling: "Preview" shows what would be added and removed; "Save" calls the service."""
    agent = _agent(request, pk)
    if request.method == "POST":
        form = CeilingForm(request.POST, viewer=request.user, agent=agent)
    else:
        current = {"capabilities": list(agent.ceiling.all())}
        form = CeilingForm(viewer=request.user, agent=agent, initial=current)
    change = None
    if request.method == "POST" and form.is_valid():
        wanted = list(form.cleaned_data["capabilities"])
        change = portal.ceiling_change(agent, wanted)
        if "save" in request.POST:
            try:
                services.agent_set_ceiling(actor=request.user, agent=agent, capabilities=wanted)
            except GovernanceError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, "Nothing changed." if change.is_empty else "The ceiling is saved.")
                return redirect("portal:agent", pk=agent.pk)
    return render(request, "portal/agent_ceiling.html", {"agent": agent, "form": form, "change": change})


# --- grants --------------------------------------------------------------------------------------------


@administer
@require_http_methods(["GET", "POST"])
def grant_new(request: HttpRequest) -> HttpResponse:
    """Grant capabilities to a user × agent: first choose the agent, then the person and capabilities."""
    chooser = ChooseAgentForm(request.GET or None, viewer=request.user)
    if not chooser.is_valid():
        return render(request, "portal/grant_choose_agent.html", {"chooser": chooser})
    agent = chooser.cleaned_data["agent"]
    initial = {"user": request.GET.get("user")} if request.GET.get("user", "").isdigit() else {}
    form = GrantForm(request.POST or None, viewer=request.user, agent=agent, initial=initial)
    if request.method == "POST" and form.is_valid():
        capabilities = list(form.cleaned_data["capabilities"])
        # Granting a high or critical capability needs a fresh second factor (docs/step-up.md).
        if any(auth_levels.granting_needs_step_up(c) for c in capabilities) and not is_fresh(request):
            return step_up_response(request)
        _grant_each(request, form, capabilities)
        return redirect("portal:agent", pk=agent.pk)
    return render(
        request,
        "portal/grant_new.html",
        {
            "agent": agent,
            "form": form,
            "chooser": chooser,
            "presets": EXPIRY_PRESETS,
            "step_up_levels": [RiskLevel.HIGH.label, RiskLevel.CRITICAL.label],
        },
    )


def _grant_each(request: HttpRequest, form: GrantForm, capabilities) -> None:
    """One service call per capability (each its own transaction); say what happened to each.

    A capability that needs a second admin (approvals.policy) becomes an approval request instead: the
    grant exists once another admin approves it.
    """
    values = {
        "agent": form.agent,
        "user": form.cleaned_data.get("user"),
        "expires_at": form.expires_at,
        "reason": form.cleaned_data["reason"],
    }
    for capability in capabilities:
        try:
            if grant_needs_second_admin(actor=request.user, capability=capability):
                grant_request_create(actor=request.user, capability=capability, **values)
                messages.warning(
                    request,
                    f"{capability.key} needs a second admin: the request waits for another admin's approval,"
                    " and the grant exists once they approve.",
                )
            else:
                result = services.grant_create(actor=request.user, capability=capability, **values)
                messages.success(request, f"Granted: {result}.")
        except GovernanceError as exc:
            messages.error(request, f"{capability.key}: {exc.message}")


@administer
@require_http_methods(["GET", "POST"])
def grant_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    grant = get_object_or_404(selectors.grants_visible_to(request.user), pk=pk)
    form = ReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.grant_revoke(actor=request.user, grant=grant, reason=form.cleaned_data["reason"])
        except GovernanceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Revoked: {grant}. Tokens carrying it stopped working.")
        return redirect("portal:agent", pk=grant.agent_id)
    return render(request, "portal/grant_revoke.html", {"grant": grant, "form": form})


# --- my page -------------------------------------------------------------------------------------------


@login_required
def my_page(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "governance/home.html",
        {
            "agents": portal.my_agents(request.user),
            "activity": portal.activity_on_behalf_of(request.user),
        },
    )


@login_required
@require_POST
def my_grant_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Withdraw one grant that names me (any other grant: 404)."""
    grant = get_object_or_404(portal.my_grants(request.user), pk=pk)
    form = OptionalReasonForm(request.POST)
    reason = (form.cleaned_data["reason"] if form.is_valid() else "") or "withdrawn by the user"
    try:
        services.grant_revoke(actor=request.user, grant=grant, reason=reason)
    except GovernanceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{grant.agent.name} can no longer use {grant.capability.key} for you.")
    return redirect("governance:home")


@login_required
@require_http_methods(["GET", "POST"])
def my_agent_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Withdraw every grant an agent holds for me, after a confirmation page."""
    grants = list(portal.my_grants(request.user).filter(agent_id=pk))
    if not grants:
        raise Http404("No such agent acts for you.")
    agent = grants[0].agent
    form = OptionalReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        reason = form.cleaned_data["reason"] or "withdrawn by the user"
        done = 0
        for grant in grants:
            try:
                services.grant_revoke(actor=request.user, grant=grant, reason=reason)
            except GovernanceError as exc:
                messages.error(request, f"{grant.capability.key}: {exc.message}")
            else:
                done += 1
        if done:
            messages.success(request, f"{agent.name} can no longer act for you ({done} revoked).")
        return redirect(reverse("governance:home"))
    return render(request, "portal/my_agent_revoke.html", {"agent": agent, "grants": grants, "form": form})
