"""Grants: created with grant_create, renewed (expiry only) with grant_renew, revoked by an action."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

from approvals.policy import grant_needs_second_admin
from approvals.services import grant_request_create
from governance import selectors, services
from governance.admin.agents import grant_state
from governance.admin.base import _REFUSAL, ServiceAdmin, ServiceForm, confirm_with_reason
from governance.errors import GovernanceError, NotPermitted
from governance.mfa.guards import ensure_fresh_for_grant, high_risk_grant_refusal
from governance.models import Grant


class GrantStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked"))

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.active(at=now)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


class GrantForm(ServiceForm):
    renew_reason = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Why the expiry changes; recorded in the audit log.",
    )

    class Meta:
        model = Grant
        fields = "__all__"


@admin.register(Grant)
class GrantAdmin(ServiceAdmin):
    visible_to = staticmethod(selectors.grants_visible_to)
    form = GrantForm
    list_display = ("capability", "user", "agent", "tool_server", "expires_at", "state", "created_at")
    list_filter = (
        GrantStateFilter,
        ("agent", admin.RelatedOnlyFieldListFilter),
        ("capability__tool_server", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("user__username", "agent__name", "capability__key")
    actions = ("revoke_selected",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("agent", "user", "capability", "expires_at", "reason")
        fields = ("organization", "agent", "user", "capability", "tool_server", "state", "expires_at")
        if self.has_change_permission(request, obj):
            fields += ("renew_reason",)
        return fields + (
            "reason",
            "granted_by",
            "created_at",
            "revoked_at",
            "revoked_by",
            "revoke_reason",
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (
            "organization",
            "agent",
            "user",
            "capability",
            "tool_server",
            "state",
            "reason",
            "granted_by",
            "created_at",
            "revoked_at",
            "revoked_by",
            "revoke_reason",
        )

    def has_change_permission(self, request, obj=None):
        # Only the expiry of an open grant changes; a revoked grant is history.
        return super().has_change_permission(request, obj) and (obj is None or obj.revoked_at is None)

    @admin.display(description="tool server", ordering="capability__tool_server__name")
    def tool_server(self, grant):
        return grant.capability.tool_server

    @admin.display(description="state")
    def state(self, grant):
        return grant_state(grant)

    def add_view(self, request, form_url="", extra_context=None):
        # Granting a high or critical capability needs a fresh second factor (docs/step-up.md), and then
        # another admin's approval before the grant exists (docs/approvals.md).
        if request.method == "POST":
            refusal = high_risk_grant_refusal(request, request.POST.get("capability"))
            if refusal is not None:
                return refusal
            proposed = self.propose_for_approval(request)
            if proposed is not None:
                return proposed
        return super().add_view(request, form_url, extra_context)

    def propose_for_approval(self, request):
        """A valid grant that needs a second admin becomes an approval request; None: the usual path."""
        form = self.get_form(request)(request.POST)
        if not form.is_valid():
            return None
        data = form.cleaned_data
        if not grant_needs_second_admin(actor=request.user, capability=data["capability"]):
            return None
        try:
            ensure_fresh_for_grant(request, data["capability"])
            proposal = grant_request_create(
                actor=request.user,
                agent=data["agent"],
                capability=data["capability"],
                user=data.get("user"),
                expires_at=data.get("expires_at"),
                reason=data.get("reason", ""),
            )
        except GovernanceError as exc:
            # Shown on the form again, exactly as a refusal by grant_create would be.
            self.message_user(request, exc.message, messages.ERROR)
            setattr(request, _REFUSAL, exc)
            return None
        self.message_user(
            request,
            f"Granting {proposal.capability.key} needs a second admin: the request waits for another "
            "admin's approval, and the grant exists once they approve.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:approvals_actionrequest_change", args=[proposal.pk]))

    def service_create(self, request, form):
        data = form.cleaned_data
        ensure_fresh_for_grant(request, data["capability"])
        if grant_needs_second_admin(actor=request.user, capability=data["capability"]):
            raise NotPermitted(f"Granting {data['capability'].key} needs a second admin's approval.")
        return services.grant_create(
            actor=request.user,
            agent=data["agent"],
            capability=data["capability"],
            user=data.get("user"),
            expires_at=data.get("expires_at"),
            reason=data.get("reason", ""),
        )

    def service_update(self, request, obj, form):
        if "expires_at" not in form.changed_data:
            return None
        return services.grant_renew(
            actor=request.user,
            grant=self.fresh(obj),
            expires_at=form.cleaned_data["expires_at"],
            reason=form.cleaned_data.get("renew_reason", ""),
        )

    @admin.action(description="Revoke selected grants")
    def revoke_selected(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            title="Revoke grants",
            verb="Revoked",
            warning="Tokens carrying these capabilities for these users stop working at once.",
            service=lambda *, actor, obj, reason: services.grant_revoke(
                actor=actor, grant=obj, reason=reason
            ),
        )
