"""Approver pages: the inbox, a request's detail with approve/deny, history, the emailed link's confirmation
page, and (DEBUG only) the development outbox.  Only a POST with a CSRF token decides; GET never does."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from approvals import dev_mail, link_checks, policy, selectors, services
from approvals.filters import InboxFilter
from approvals.models import MAX_REASON, ActionRequest, ApprovalNotification
from governance.errors import GovernanceError
from governance.mfa.guards import step_up_response

LINK_REFUSED = "This link does not work any more, or not for you. Open your inbox to see what waits for you."


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("deny", "Deny")])
    reason = forms.CharField(required=False, max_length=MAX_REASON, widget=forms.Textarea(attrs={"rows": 3}))


def _decide(request: HttpRequest, action_request: ActionRequest, form: DecisionForm, link=None):
    decide = (
        services.action_request_approve
        if form.cleaned_data["decision"] == "approve"
        else services.action_request_deny
    )
    return decide(
        actor=request.user, action_request=action_request, reason=form.cleaned_data["reason"], link=link
    )


def _context(action_request: ActionRequest, user) -> dict:
    return {
        "action_request": action_request,
        "capability": action_request.capability,
        "decisions": list(action_request.decisions.select_related("approver")),
        "may_decide": policy.may_decide(user, action_request)
        and not action_request.decisions.filter(approver=user).exists(),
        "needs_step_up": policy.needs_step_up(action_request),
    }


@login_required
@never_cache
def inbox(request: HttpRequest) -> HttpResponse:
    requests = InboxFilter(request.GET, queryset=selectors.inbox(request.user, at=timezone.now()))
    return render(request, "approvals/inbox.html", {"filter": requests, "requests": requests.qs[:200]})


@login_required
@never_cache
def history(request: HttpRequest) -> HttpResponse:
    return render(request, "approvals/history.html", {"requests": selectors.history(request.user)[:200]})


@login_required
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def detail(request: HttpRequest, public_id) -> HttpResponse:
    action_request = selectors.visible_to(request.user).filter(public_id=public_id).first()
    if action_request is None:
        raise Http404("No such request.")
    form = DecisionForm()
    status = 200
    if request.method == "POST":
        form = DecisionForm(request.POST)
        if policy.needs_step_up(action_request):
            refusal = step_up_response(request)
            if refusal is not None:
                return refusal
        if form.is_valid():
            try:
                _decide(request, action_request, form)
            except GovernanceError as exc:
                form.add_error(None, exc.message)
                status = 409 if exc.code in ("conflict", "invalid_state") else 403
            else:
                return redirect("approvals:detail", public_id=action_request.public_id)
        else:
            status = 400
        action_request.refresh_from_db()
    return render(
        request,
        "approvals/detail.html",
        {**_context(action_request, request.user), "form": form},
        status=status,
    )


def _refused(request: HttpRequest, notification: ApprovalNotification | None, why: str) -> HttpResponse:
    services.approval_link_refuse(actor=request.user, notification=notification, why=why)
    return render(request, "approvals/link_refused.html", {"sentence": LINK_REFUSED}, status=404)


@login_required
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def link(request: HttpRequest, token: str) -> HttpResponse:
    """The emailed link: GET shows the request and a form; only the form's POST (with CSRF) decides."""
    notification = link_checks.find(token)
    why = link_checks.problem(notification, request.user, now=timezone.now())
    if why is not None:
        return _refused(request, notification, why)
    action_request = notification.request
    if policy.needs_step_up(action_request):
        refusal = step_up_response(request)
        if refusal is not None:
            return refusal
    form = DecisionForm()
    status = 200
    if request.method == "POST":
        form = DecisionForm(request.POST)
        if form.is_valid():
            try:
                _decide(request, action_request, form, link=services.LinkUse(notification.pk))
            except GovernanceError as exc:
                form.add_error(None, exc.message)
                status = 409 if exc.code in ("conflict", "invalid_state") else 403
            else:
                return redirect("approvals:detail", public_id=action_request.public_id)
        else:
            status = 400
    elif request.method == "GET":
        services.approval_link_open(actor=request.user, notification=notification)
    return render(
        request,
        "approvals/confirm.html",
        {**_context(action_request, request.user), "form": form, "via_link": True},
        status=status,
    )


@never_cache
def dev_outbox(request: HttpRequest) -> HttpResponse:
    """DEBUG only: the mail the default run 'sent', with working links (404 otherwise)."""
    if not settings.DEBUG:
        raise Http404("Not found.")
    messages = []
    for name, message in dev_mail.saved_messages():
        body = message.get_body(preferencelist=("plain",))
        messages.append(
            {
                "name": name,
                "subject": str(message["subject"] or ""),
                "to": str(message["to"] or ""),
                "date": str(message["date"] or ""),
                "body": body.get_content() if body else "",
            }
        )
    return render(request, "approvals/dev_outbox.html", {"messages": messages})
