"""Filters of the approvers' inbox."""

from __future__ import annotations

import django_filters

from approvals.models import ActionRequest, RequestKind


class InboxFilter(django_filters.FilterSet):
    capability = django_filters.CharFilter(
        field_name="capability__key", lookup_expr="exact", max_length=128, label="Capability"
    )
    agent = django_filters.CharFilter(
        field_name="agent__name", lookup_expr="icontains", max_length=200, label="Agent"
    )
    user = django_filters.CharFilter(
        field_name="on_behalf_of__username", lookup_expr="exact", max_length=150, label="For user"
    )
    kind = django_filters.ChoiceFilter(choices=RequestKind.choices, label="Kind")

    class Meta:
        model = ActionRequest
        fields = ["capability", "agent", "user", "kind"]
