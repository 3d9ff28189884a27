"""Tool servers (audiences) and capabilities, through tool_server_* and capability_* services."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from governance import selectors, services
from governance.admin.base import ServiceAdmin, ServiceForm, changed
from governance.enforcement.constraints import constraint_problems
from governance.errors import GovernanceError, InvalidInput
from governance.keys import validate_public_jwks
from governance.mfa.guards import require_step_up_action
from governance.models import Capability, ToolServer
from governance.services.tool_servers import CAPABILITY_FIELDS, TOOL_SERVER_AUTH_METHODS

CREDENTIAL_FIELDS = ("token_endpoint_auth_method", "jwks", "jwks_uri", "credential_client_id")


class ToolServerForm(ServiceForm):
    """A tool server's profile and, once it exists, the credentials it authenticates with."""

    token_endpoint_auth_method = forms.ChoiceField(
        required=False,
        label="Authenticates with",
        choices=[("", "— no credentials yet —"), *((m, m) for m in TOOL_SERVER_AUTH_METHODS)],
        help_text="At introspection and the decision API. A secret is issued with the action "
        "“Issue a new client secret” (or manage.py tool_server_secret) and shown once.",
    )
    jwks = forms.JSONField(
        required=False,
        label="JWKS",
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80, "spellcheck": "false"}),
        help_text="For private_key_jwt: public keys only, as a JWK Set.",
    )
    jwks_uri = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        label="JWKS URI",
        help_text="Or where the tool server publishes its public keys (https).",
    )
    credential_client_id = forms.CharField(
        required=False,
        max_length=100,
        label="client_id",
        help_text="Optional: the client id the tool server is configured with (else one is generated).",
    )

    class Meta:
        model = ToolServer
        # The admin names the fields (get_fields) and builds the URL fields with its https default.
        fields = ("organization", "name", "description")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        server = self.instance
        if server.pk and server.application_id:
            self.initial["credential_client_id"] = server.application.client_id
        elif server.pk:
            self.initial["token_endpoint_auth_method"] = ""

    def clean_jwks(self):
        try:
            return validate_public_jwks(self.cleaned_data.get("jwks"))
        except InvalidInput as exc:
            # Never echo refused key material back into the page.
            self.data = self.data.copy()
            self.data[self.add_prefix("jwks")] = ""
            raise forms.ValidationError(exc.message) from None


@admin.register(ToolServer)
class ToolServerAdmin(ServiceAdmin):
    visible_to = staticmethod(selectors.tool_servers_visible_to)
    form = ToolServerForm
    list_display = ("name", "audience", "organization", "client_id", "authenticates_with")
    list_filter = (("organization", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("name", "audience")
    actions = ("issue_secret",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("organization", "name", "audience", "description")
        return (
            "organization",
            "name",
            "audience",
            "description",
            *CREDENTIAL_FIELDS,
            "created_at",
            "updated_at",
        )

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("organization", "created_at", "updated_at")

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("organization", request.user.organization_id)
        return initial

    @admin.display(description="client_id", ordering="application__client_id")
    def client_id(self, server):
        return server.application.client_id if server.application_id else "—"

    @admin.display(description="authenticates with")
    def authenticates_with(self, server):
        return server.token_endpoint_auth_method if server.application_id else "—"

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
        server = self.fresh(obj)
        changes = changed(form, ("name", "audience", "description"))
        if changes:
            server = services.tool_server_update(actor=request.user, tool_server=server, **changes)
        data = form.cleaned_data
        if set(CREDENTIAL_FIELDS) & set(form.changed_data) and data.get("token_endpoint_auth_method"):
            server = services.tool_server_set_credentials(
                actor=request.user,
                tool_server=server,
                token_endpoint_auth_method=data["token_endpoint_auth_method"],
                jwks=data.get("jwks") or {},
                jwks_uri=data.get("jwks_uri") or "",
                client_id=data.get("credential_client_id") or None,
            )
        return server

    @admin.action(description="Issue a new client secret (shown once)")
    @require_step_up_action("Issuing a tool server's client secret")
    def issue_secret(self, request, queryset):
        servers = list(queryset[:2])
        if len(servers) != 1:
            self.message_user(request, "Select exactly one tool server.", messages.ERROR)
            return None
        server = servers[0]
        if request.POST.get("post") != "yes":
            return self._secret_page(request, server, secret=None)
        try:
            secret = services.tool_server_issue_secret(actor=request.user, tool_server=server)
        except GovernanceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return None
        return self._secret_page(request, server, secret=secret)

    def _secret_page(self, request, server, *, secret: str | None):
        context = {
            **self.admin_site.each_context(request),
            "title": "Issue a client secret",
            "server": server,
            "secret": secret,
            "opts": self.opts,
            "action": request.POST.get("action", ""),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        response = TemplateResponse(request, "admin/governance/tool_server_secret.html", context)
        response["Cache-Control"] = "no-store"
        return response


class CapabilityForm(ServiceForm):
    constraints = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80, "spellcheck": "false"}),
        help_text='Parameter constraints (docs/constraints.md), e.g. {"patient_id": {"equals": "$user"}}.',
    )

    approval_expiry_seconds = forms.IntegerField(
        required=False,
        min_value=60,
        max_value=7 * 24 * 3600,
        help_text="How long a request waits for approvers (seconds; empty: one hour).",
    )

    class Meta:
        model = Capability
        fields = "__all__"

    def clean_constraints(self):
        value = self.cleaned_data.get("constraints") or {}
        problems = constraint_problems(value)
        if problems:
            raise forms.ValidationError([f"{where}: {why}" if where else why for where, why in problems])
        return value

    def clean_approval_expiry_seconds(self):
        value = self.cleaned_data.get("approval_expiry_seconds")
        return Capability._meta.get_field("approval_expiry_seconds").default if value is None else value

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
        "approver_role",
        "named_approvers",
        "on_behalf_of_may_approve",
        "exclude_agent_owner",
        "tolerate_denials",
        "approval_expiry_seconds",
    )

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("tool_server", "key")

    def service_create(self, request, form):
        data = form.cleaned_data
        fields = {name: data[name] for name in CAPABILITY_FIELDS if name in data}
        if data.get("named_approvers"):
            fields["named_approvers"] = list(data["named_approvers"])
        return services.capability_create(
            actor=request.user, tool_server=data["tool_server"], key=data["key"], **fields
        )

    def service_update(self, request, obj, form):
        changes = changed(form, CAPABILITY_FIELDS)
        if "named_approvers" in form.changed_data:
            changes["named_approvers"] = list(form.cleaned_data["named_approvers"])
        if not changes:
            return None
        return services.capability_update(actor=request.user, capability=self.fresh(obj), **changes)
