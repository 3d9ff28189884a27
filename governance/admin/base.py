"""What every governance admin shares: writes go through the services, reads through the selectors.

The Django admin normally saves the form's instance itself.  Here ``save_model`` and ``save_related`` hand the
cleaned form data to a service instead, so each change is checked by the domain rules and audited with the
acting admin.  A domain error raised there escapes the admin's transaction (rolling back everything written
in that request) and the form is shown again with the error: see :meth:`ServiceAdmin.changeform_view`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, models
from django.http import Http404
from django.template.response import TemplateResponse

from governance import selectors
from governance.errors import GovernanceError
from governance.models import Agent, Capability, Organization, Role, ToolServer, User
from governance.services._common import integrity

# Which selector restricts the choices of a foreign key (or many-to-many) to a model.
CHOICES: dict[type[models.Model], Callable[[User], models.QuerySet]] = {
    Organization: selectors.organizations_visible_to,
    User: selectors.users_visible_to,
    ToolServer: selectors.tool_servers_visible_to,
    Capability: selectors.capabilities_visible_to,
    Agent: selectors.agents_visible_to,
}

_REFUSAL = "_gatehouse_service_refusal"


def can_manage(user) -> bool:
    """Superusers, and staff admins of an organization; nobody else uses the governance admin."""
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    return user.is_superuser or (user.role == Role.ADMIN and user.organization_id is not None)


class ServiceForm(forms.ModelForm):
    """A model form that can show, on a second rendering, the domain error a service raised."""

    service_refusal: GovernanceError | None = None

    def clean(self):
        cleaned = super().clean()
        refusal = self.service_refusal
        if refusal is not None:
            named = [field for field in refusal.errors if field in self.fields]
            for field in named:
                self.add_error(field, refusal.message)
            if not named:
                self.add_error(None, refusal.message)
        return cleaned


def adopt(target: models.Model, source: models.Model) -> None:
    """Make the admin's unsaved form instance stand for the row a service created."""
    for field in source._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))
    target._state.adding = False
    target._state.db = source._state.db


def changed(form: forms.ModelForm, allowed: Iterable[str]) -> dict[str, Any]:
    """The cleaned values of the allowed fields the admin actually changed."""
    return {name: form.cleaned_data[name] for name in form.changed_data if name in set(allowed)}


class ServiceAdmin(admin.ModelAdmin):
    """Base for the governance admins: organization-scoped, service-backed, never deleting."""

    form = ServiceForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    #: The selector that returns the rows the viewer may see.
    visible_to: Callable[[User], models.QuerySet]
    show_facets = admin.ShowFacets.NEVER

    # Reads -------------------------------------------------------------------------------------------

    def get_queryset(self, request):
        queryset = type(self).visible_to(request.user)
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    def get_object(self, request, object_id, from_field=None):
        # A row outside the viewer's organization answers exactly like a row that does not exist.
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such object.")
        return obj

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        selector = CHOICES.get(db_field.related_model)
        if selector is not None:
            kwargs["queryset"] = selector(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        selector = CHOICES.get(db_field.related_model)
        if selector is not None:
            kwargs["queryset"] = selector(request.user)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    # Permissions: the role decides, not Django's per-model permission table ----------------------------

    def has_module_permission(self, request):
        return can_manage(request.user)

    def has_view_permission(self, request, obj=None):
        return can_manage(request.user)

    def has_add_permission(self, request):
        return can_manage(request.user)

    def has_change_permission(self, request, obj=None):
        return can_manage(request.user)

    def has_delete_permission(self, request, obj=None):
        return False  # revoke, retire or deactivate instead

    def delete_model(self, request, obj):
        raise PermissionDenied

    def delete_queryset(self, request, queryset):
        raise PermissionDenied

    # Writes ------------------------------------------------------------------------------------------

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        refusal = getattr(request, _REFUSAL, None)
        if refusal is not None:
            form = type(form.__name__, (form,), {"service_refusal": refusal})
        return form

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except IntegrityError as exc:
            # A database rule the service did not translate: same treatment as a domain error.
            refusal: GovernanceError = integrity(exc)
        except GovernanceError as exc:
            refusal = exc
        # The admin's transaction has rolled back.  Render the same POST again: the form now carries
        # the error, is invalid, and nothing is saved.
        self.message_user(request, refusal.message, messages.ERROR)
        setattr(request, _REFUSAL, refusal)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        saved = self.service_update(request, obj, form) if change else self.service_create(request, form)
        if saved is not None and saved is not obj:
            adopt(obj, saved)

    def save_related(self, request, form, formsets, change):
        # Many-to-many fields go through the services too (see AgentAdmin).  Inlines are read-only: nothing
        # of theirs is saved, which the admin's change message is told here.
        self.service_save_related(request, form.instance, form, change)
        for formset in formsets:
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def service_create(self, request, form) -> models.Model:
        raise PermissionDenied

    def service_update(self, request, obj, form) -> models.Model | None:
        raise PermissionDenied

    def service_save_related(self, request, obj, form, change) -> None:
        return None

    def fresh(self, obj: models.Model) -> models.Model:
        """The row as stored, before the form's values were copied onto ``obj``."""
        return type(obj)._default_manager.get(pk=obj.pk)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=1000,
        help_text="Recorded in the audit log.",
    )


def apply_each(modeladmin, request, queryset, *, service: Callable[..., Any], verb: str, **kwargs) -> None:
    """Call one service per selected row (each its own transaction); report successes and refusals."""
    done, refused = 0, []
    for obj in queryset:
        try:
            service(actor=request.user, obj=obj, **kwargs)
        except GovernanceError as exc:
            refused.append(f"{obj}: {exc.message}")
        else:
            done += 1
    if done:
        noun = modeladmin.opts.verbose_name if done == 1 else modeladmin.opts.verbose_name_plural
        modeladmin.message_user(request, f"{verb} {done} {noun}.", messages.SUCCESS)
    for line in refused:
        modeladmin.message_user(request, line, messages.ERROR)


def confirm_with_reason(
    modeladmin, request, queryset, *, title: str, verb: str, service: Callable[..., Any], warning: str = ""
):
    """An action that asks for a reason on a confirmation page, then applies ``service`` to each row."""
    if request.POST.get("post") == "yes":
        form = ReasonForm(request.POST)
        if form.is_valid():
            apply_each(
                modeladmin, request, queryset, service=service, verb=verb, reason=form.cleaned_data["reason"]
            )
            return None  # back to the changelist
    else:
        form = ReasonForm()
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "verb": verb,
        "warning": warning,
        "objects": list(queryset),
        "form": form,
        "opts": modeladmin.opts,
        "action": request.POST.get("action", ""),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, "admin/governance/confirm_action.html", context)
