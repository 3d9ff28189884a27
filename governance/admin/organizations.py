"""Organizations and users, through organization_* and user_* services."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth import password_validation

from governance import selectors, services
from governance.admin.base import ServiceAdmin, ServiceForm, changed, confirm_with_reason
from governance.models import Organization, User


@admin.register(Organization)
class OrganizationAdmin(ServiceAdmin):
    visible_to = staticmethod(selectors.organizations_visible_to)
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")

    def get_fields(self, request, obj=None):
        return ("slug", "name") if obj is None else ("slug", "name", "created_at")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("slug", "created_at")

    def has_add_permission(self, request):
        # New tenants are a superuser's decision (organization_create refuses anyone else).
        return super().has_add_permission(request) and request.user.is_superuser

    def service_create(self, request, form):
        return services.organization_create(
            actor=request.user, slug=form.cleaned_data["slug"], name=form.cleaned_data["name"]
        )

    def service_update(self, request, obj, form):
        if "name" not in form.changed_data:
            return None
        return services.organization_update(
            actor=request.user, organization=self.fresh(obj), name=form.cleaned_data["name"]
        )


USER_UPDATABLE = ("email", "first_name", "last_name", "role", "attributes")


class UserForm(ServiceForm):
    initial_password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Optional. Without one, the user cannot sign in with a password until it is set.",
    )

    class Meta:
        model = User
        fields = "__all__"

    def clean_attributes(self):
        # An emptied box means "no attributes", not a JSON null.
        value = self.cleaned_data.get("attributes")
        return {} if value is None else value

    def clean_initial_password(self):
        password = self.cleaned_data.get("initial_password")
        if password:
            candidate = User(username=self.cleaned_data.get("username", ""), email=self.data.get("email", ""))
            password_validation.validate_password(password, candidate)
        return password


@admin.register(User)
class UserAdmin(ServiceAdmin):
    visible_to = staticmethod(selectors.users_visible_to)
    form = UserForm
    list_display = ("username", "email", "organization", "role", "is_active", "last_login")
    list_filter = ("role", "is_active", ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("username", "email", "first_name", "last_name")
    actions = ("deactivate_selected",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return (
                "organization",
                "username",
                "email",
                "role",
                "first_name",
                "last_name",
                "attributes",
                "initial_password",
            )
        return (
            "organization",
            "username",
            "email",
            "role",
            "first_name",
            "last_name",
            "attributes",
            "is_active",
            "is_staff",
            "is_superuser",
            "last_login",
            "date_joined",
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (
            "organization",
            "username",
            "is_active",
            "is_staff",
            "is_superuser",
            "last_login",
            "date_joined",
        )

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("organization", request.user.organization_id)
        return initial

    def has_change_permission(self, request, obj=None):
        # An organization's admin does not manage a superuser, even one listed in their organization.
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or request.user.is_superuser or not obj.is_superuser)

    def service_create(self, request, form):
        data = form.cleaned_data
        return services.user_create(
            actor=request.user,
            organization=data["organization"],
            username=data["username"],
            email=data.get("email", ""),
            role=data["role"],
            first_name=data.get("first_name", ""),
            last_name=data.get("last_name", ""),
            password=data.get("initial_password") or None,
            attributes=data.get("attributes") or {},
        )

    def service_update(self, request, obj, form):
        changes = changed(form, USER_UPDATABLE)
        if not changes:
            return None
        return services.user_update(actor=request.user, user=self.fresh(obj), **changes)

    @admin.action(description="Deactivate selected users (revokes their tokens)")
    def deactivate_selected(self, request, queryset):
        if not request.user.is_superuser:
            queryset = queryset.filter(is_superuser=False)
        return confirm_with_reason(
            self,
            request,
            queryset,
            title="Deactivate users",
            verb="Deactivated",
            warning="They can no longer sign in, and every token minted for them stops working.",
            service=lambda *, actor, obj, reason: services.user_deactivate(
                actor=actor, user=obj, reason=reason
            ),
        )
