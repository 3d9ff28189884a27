"""The audit search as a JSON API (session-authenticated, read-only): the same FilterSet and keyset pages
as the screen, errors in the API's one shape."""

from __future__ import annotations

import json

from django.urls import reverse
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import export
from audit.access import reader_for
from audit.models import AuditEvent
from audit.views import PAGE_SIZE, PageForm, search_filter, search_page


class AuditEventSerializer(serializers.ModelSerializer):
    parameters = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = export.FIELDS
        read_only_fields = export.FIELDS

    def get_parameters(self, event: AuditEvent):
        """The parameters as a JSON object; as the stored text when that is not JSON (a tampered row)."""
        try:
            return json.loads(event.parameters)
        except ValueError:
            return event.parameters


class AuditEventList(APIView):
    """``GET``: one page of events matching the filters, newest first unless ``order=oldest``; ``next``
    is the URL of the following page, or null."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        reader = reader_for(request.user)
        if reader is None:
            raise PermissionDenied("Only auditors and admins can read the audit log.")
        filterset = search_filter(request, reader)
        page_form = PageForm(request.query_params)
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        if not page_form.is_valid():
            raise ValidationError(page_form.errors)
        size = page_form.cleaned_data.get("limit") or PAGE_SIZE
        page = search_page(filterset, reader, page_form, size)
        if page is None:
            raise ValidationError(page_form.errors)
        next_url = None
        if page.next_after is not None:
            query = request.query_params.copy()
            query["after"] = str(page.next_after)
            next_url = request.build_absolute_uri(f"{reverse('audit:api_events')}?{query.urlencode()}")
        return Response({"results": AuditEventSerializer(page.events, many=True).data, "next": next_url})
