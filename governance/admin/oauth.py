"""django-oauth-toolkit's own admin would edit clients and tokens behind the services' back: replace it.

Applications are created and changed with their agent or tool server; codes and ID tokens are not listed.
Access and refresh tokens stay listable, read-only and without their values, for a superuser or the
organization that owns the client.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)

from governance.admin.base import can_manage

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()

for model in (get_application_model(), get_grant_model(), get_id_token_model(), AccessToken, RefreshToken):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


class ReadOnlyTokenAdmin(admin.ModelAdmin):
    list_select_related = ("application", "user")
    search_fields = ("application__name", "application__client_id", "user__username")
    actions = None
    show_facets = admin.ShowFacets.NEVER

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        user = request.user
        if user.is_superuser:
            return queryset
        return queryset.filter(
            Q(application__agent__organization_id=user.organization_id)
            | Q(application__tool_server__organization_id=user.organization_id)
        )

    def get_fields(self, request, obj=None):
        return self.list_display

    def has_module_permission(self, request):
        return can_manage(request.user)

    def has_view_permission(self, request, obj=None):
        return can_manage(request.user)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoke through the agent (suspend) or the grant (revoke)


@admin.register(AccessToken)
class AccessTokenAdmin(ReadOnlyTokenAdmin):
    list_display = ("id", "user", "application", "scope", "expires", "created")
    list_filter = ("expires",)


@admin.register(RefreshToken)
class RefreshTokenAdmin(ReadOnlyTokenAdmin):
    list_display = ("id", "user", "application", "revoked", "created")
    list_filter = ("revoked",)
