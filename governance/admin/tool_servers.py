"""Tool servers (audiences) and capabilities, through tool_server_* and capability_* services."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from governance import selectors, services
from governance.admin.base import ServiceAdmin, ServiceForm, changed
from governance.models import Capability, ToolServer
from governance.services.tool_servers import CAPABILITY_FIELDS


@admin.register(ToolServer)
class ToolServerAdmin(ServiceAdmin):
    visible_to = staticmethod(selectors.tool_servers_visible_to)
    list_display = ("name", "audience", "organization", "client_id")
    list_filter = (("organization", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("name", "audience")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("organization", "name", "audience", "description")
        return ("organization", "name", "audience", "description", "client_id", "created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("organization", "client_id", "created_at", "updated_at")

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("organization", request.user.organization_id)
        return initial

    @admin.display(description="client_id", ordering="application__client_id")
    def client_id(self, server):
        return server.application.client_id if server.application_id else "—"

    def service_create(self, request, form):
        data = form.cleaned_data
        return services.tool_server_create(
            actor=request.user,
            organization=data["organization"],
            name=data["name"],
            audience=data["audience"],
            description=data.get("description", ""),
        )

    def service_update(self, request, obj, form):
        changes = changed(form, ("name", "audience", "description"))
        if not changes:
            return None
        return services.tool_server_update(actor=request.user, tool_server=self.fresh(obj), **changes)


class CapabilityForm(ServiceForm):
    constraints = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80, "spellcheck": "false"}),
        help_text='Parameter constraints, e.g. {"patient_id": {"equals": "$user"}}.',
    )

    class Meta:
        model = Capability
        fields = "__all__"

    def clean_constraints(self):
        return self.cleaned_data.get("constraints") or {}

    def clean(self):
        cleaned = super().clean()
        needs, count = cleaned.get("requires_approval"), cleaned.get("approvals_required")
        if needs and count == 0:
            self.add_error("approvals_required", "Say how many approvers must agree (at least 1).")
        elif not needs and count:
            self.add_error(
                "approvals_required", "Only a capability that needs approval takes an approver count."
            )
        return cleaned


@admin.register(Capability)
class CapabilityAdmin(ServiceAdmin):
    visible_to = staticmethod(selectors.capabilities_visible_to)
    form = CapabilityForm
    list_display = (
        "key",
        "tool_server",
        "risk_level",
        "requires_approval",
        "approvals_required",
        "requires_step_up",
        "max_token_lifetime",
    )
    list_filter = (
        "risk_level",
        "requires_approval",
        "requires_step_up",
        ("tool_server", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("key", "description", "tool_server__name")
    fields = (
        "tool_server",
        "key",
        "description",
        "risk_level",
        "requires_approval",
        "approvals_required",
        "requires_step_up",
        "max_token_lifetime",
        "rate_limit_per_minute",
        "daily_quota",
        "constraints",
    )

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("tool_server", "key")

    def service_create(self, request, form):
        data = form.cleaned_data
        fields = {name: data[name] for name in CAPABILITY_FIELDS if name in data}
        return services.capability_create(
            actor=request.user, tool_server=data["tool_server"], key=data["key"], **fields
        )

    def service_update(self, request, obj, form):
        changes = changed(form, CAPABILITY_FIELDS)
        if not changes:
            return None
        return services.capability_update(actor=request.user, capability=self.fresh(obj), **changes)
