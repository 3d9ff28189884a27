"""The audit search screens and exports: thin views over :mod:`audit.filters` and :mod:`audit.selectors`.

Who may read what comes from the reader hook (:mod:`audit.access`); anyone else gets 403.  Bad filters
give a plain form error (a 400 for exports), never a database error.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from audit import export, selectors, services
from audit.access import AuditReader, reader_for
from audit.filters import BIGINT_MAX, AuditEventFilter
from audit.verify import verify_event

PAGE_SIZE = 50
API_PAGE_MAX = 200


class PageForm(forms.Form):
    """Where a page starts: after the event ``after`` (keyset), ``limit`` events long (API only)."""

    after = forms.IntegerField(required=False, min_value=1, max_value=BIGINT_MAX, widget=forms.HiddenInput)
    limit = forms.IntegerField(required=False, min_value=1, max_value=API_PAGE_MAX)


def audit_reader(request) -> AuditReader:
    reader = reader_for(request.user)
    if reader is None:
        raise PermissionDenied("Only auditors and admins can read the audit log.")
    return reader


def search_filter(request, reader: AuditReader) -> AuditEventFilter:
    """The FilterSet over what ``reader`` may see, bound to the request's query string."""
    return AuditEventFilter(request.GET, queryset=selectors.events_visible_to(reader), reader=reader)


def search_page(filterset: AuditEventFilter, reader: AuditReader, page_form: PageForm, size: int):
    """The page of results, or None with an error on ``page_form`` when its start is not an event the
    reader can see (the same answer whether it does not exist or belongs to someone else)."""
    after = None
    if page_form.cleaned_data.get("after"):
        after = selectors.event_for(reader, page_form.cleaned_data["after"])
        if after is None:
            page_form.add_error("after", "This page no longer starts at an event you can see.")
            return None
    return selectors.keyset_page(filterset.qs, newest_first=filterset.newest_first, after=after, size=size)


def _offer_choices(filterset: AuditEventFilter, reader: AuditReader) -> None:
    """Lists for the agent, user and tool-server filters when the reader has them (ids otherwise)."""
    fields = filterset.form.fields
    for name, choices in (
        ("agent", reader.agents),
        ("on_behalf_of", reader.users),
        ("tool_server", [(server.id, server.label) for server in reader.tool_servers]),
    ):
        if choices:
            fields[name].widget = forms.Select(choices=[("", "Any"), *choices])
    for name in ("since", "until"):
        fields[name].widget = forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"})


@require_safe
@login_required
def search(request):
    reader = audit_reader(request)
    filterset = search_filter(request, reader)
    page_form = PageForm(request.GET)
    _offer_choices(filterset, reader)
    page = None
    if filterset.is_valid() and page_form.is_valid():
        page = search_page(filterset, reader, page_form, PAGE_SIZE)
    next_query = None
    if page is not None and page.next_after is not None:
        query = request.GET.copy()
        query["after"] = str(page.next_after)
        next_query = query.urlencode()
    export_query = request.GET.copy()
    export_query.pop("after", None)
    context = {
        "filter": filterset,
        "form": filterset.form,
        "page_form": page_form,
        "page": page,
        "next_query": next_query,
        "export_query": export_query.urlencode(),
        "first_page": "after" in request.GET,
        "reader": reader,
    }
    return render(request, "audit/search.html", context, status=200 if page is not None else 400)


@require_safe
@login_required
def event_detail(request, seq: int):
    reader = audit_reader(request)
    if seq > BIGINT_MAX:
        raise Http404
    event = selectors.event_for(reader, seq)
    if event is None:
        raise Http404
    before, after = selectors.lane_neighbours(reader, event)
    try:
        parameters = json.dumps(json.loads(event.parameters), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        parameters = event.parameters
    context = {
        "event": event,
        "parameters": parameters,
        "request_events": selectors.request_events(reader, event),
        "lane_before": before,
        "lane_after": after,
        "check": verify_event(event),
        "reader": reader,
    }
    return render(request, "audit/event.html", context)


_FORMATS = {
    "csv": ("text/csv; charset=utf-8", export.csv_lines),
    "jsonl": ("application/x-ndjson; charset=utf-8", export.jsonl_lines),
}


@require_safe
@login_required
def export_events(request, export_format: str):
    reader = audit_reader(request)
    content_type, lines = _FORMATS[export_format]
    filterset = search_filter(request, reader)
    if not filterset.is_valid():
        return render(request, "audit/export_refused.html", {"form": filterset.form}, status=400)
    services.export_record(
        actor=request.user,
        organization_id=reader.organization_id,
        export_format=export_format,
        filters=filterset.applied(),
    )
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(lines(filterset.qs), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{export_format}"'
    response["Cache-Control"] = "no-store"
    return response
