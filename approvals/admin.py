"""Action requests in the admin: read-only (people decide in the portal), cancellable with a reason."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from approvals import selectors, services
from approvals.models import ActionRequest, ApprovalDecision
from governance.admin.base import ServiceAdmin, confirm_with_reason


class DecisionInline(admin.TabularInline):
    model = ApprovalDecision
    fields = ("approver", "decision", "reason", "channel", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ActionRequest)
class ActionRequestAdmin(ServiceAdmin):
    visible_to = staticmethod(selectors.visible_to)
    inlines = [DecisionInline]
    list_display = (
        "capability",
        "kind",
        "agent",
        "on_behalf_of",
        "status",
        "approvals_received",
        "approvals_required",
        "expires_at",
        "created_at",
    )
    list_filter = ("status", "kind", ("capability", admin.RelatedOnlyFieldListFilter))
    search_fields = ("agent__name", "capability__key", "on_behalf_of__username", "requested_by__username")
    actions = ("cancel_selected",)
    fields = (
        "public_id",
        "decide",
        "kind",
        "status",
        "agent",
        "on_behalf_of",
        "requested_by",
        "capability",
        "details_json",
        "binding_message",
        "approvals_required",
        "approvals_received",
        "denial_ends_request",
        "created_at",
        "expires_at",
        "decided_at",
        "grant",
        "grant_expires_at",
        "client",
        "token_issued_at",
        "used_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="decide")
    def decide(self, obj):
        return format_html(
            '<a href="{}">Open in the approvals portal</a>', reverse("approvals:detail", args=[obj.public_id])
        )

    @admin.display(description="exact parameters")
    def details_json(self, obj):
        return format_html("<pre>{}</pre>", obj.details_json)

    @admin.action(description="Cancel selected requests")
    def cancel_selected(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            title="Cancel action requests",
            verb="Cancelled",
            warning="A cancelled request can no longer be approved.",
            service=lambda *, actor, obj, reason: services.action_request_cancel(
                actor=actor, action_request=obj, reason=reason
            ),
        )
