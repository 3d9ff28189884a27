"""Agents: identity, keys and ceiling edited through the services; lifecycle changes as admin actions."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html_join
from jwcrypto import jwk

from governance import auth_levels, selectors, services
from governance.admin.base import ServiceAdmin, ServiceForm, apply_each, changed, confirm_with_reason
from governance.errors import InvalidInput
from governance.keys import validate_public_jwks
from governance.mfa.guards import step_up_refusal_for_admin
from governance.models import Agent, Grant
from governance.models.agents import AgentStatus, TokenEndpointAuthMethod
from governance.services.agents import AGENT_AUTH_METHODS

UPDATABLE = ("name", "description", "owner", "jwks", "jwks_uri", "dpop_bound_tokens_required")


class AgentForm(ServiceForm):
    jwks = forms.JSONField(
        required=False,
        label="JWKS",
        widget=forms.Textarea(
            attrs={"rows": 10, "cols": 80, "class": "vLargeTextField", "spellcheck": "false"}
        ),
        help_text='Public keys only, as a JWK Set: {"keys": [{"kty": "EC", "crv": "P-256", …}]}.',
    )
    jwks_uri = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        label="JWKS URI",
        help_text="Or the URL where the agent publishes its public keys.",
    )
    redirect_uris = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Interactive agents only: exact redirect URIs, one per line.",
    )
    token_endpoint_auth_method = forms.ChoiceField(
        required=False,
        choices=[(m.value, m.label) for m in TokenEndpointAuthMethod if m in AGENT_AUTH_METHODS],
        initial=TokenEndpointAuthMethod.PRIVATE_KEY_JWT,
        label="Authenticates with",
        help_text="Its key, or nothing: a public client (PKCE only; desktop and command-line agents).",
    )
    chosen_client_id = forms.CharField(
        required=False,
        max_length=100,
        label="client_id",
        help_text="Optional: the client id the agent is configured with (else one is generated).",
    )

    class Meta:
        model = Agent
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        application = self.instance.application if self.instance.pk else None
        if application is not None and "redirect_uris" in self.fields:
            self.initial["redirect_uris"] = "\n".join(application.redirect_uris.split())
        if application is not None and "chosen_client_id" in self.fields:
            self.initial["chosen_client_id"] = application.client_id
        method = self.fields.get("token_endpoint_auth_method")
        current = self.instance.token_endpoint_auth_method
        if method is not None and current not in AGENT_AUTH_METHODS:
            # A secret method comes from dynamic registration; it is shown, not changed here.
            method.choices, method.disabled = [(current, current)], True
        if "status" in self.fields:  # add form: a new agent starts active or pending
            self.fields["status"].choices = [
                (value, label)
                for value, label in AgentStatus.choices
                if value in (AgentStatus.ACTIVE, AgentStatus.PENDING)
            ]

    def clean_jwks(self):
        try:
            return validate_public_jwks(self.cleaned_data.get("jwks"))
        except InvalidInput as exc:
            # Never echo refused key material back into the page.
            self.data = self.data.copy()
            self.data[self.add_prefix("jwks")] = ""
            raise forms.ValidationError(exc.message) from None

    def clean_token_endpoint_auth_method(self):
        # Left out of a post: as it is (a new agent: its key).
        chosen = self.cleaned_data.get("token_endpoint_auth_method")
        return chosen or self.instance.token_endpoint_auth_method or TokenEndpointAuthMethod.PRIVATE_KEY_JWT

    def clean_redirect_uris(self):
        return [
            line.strip() for line in self.cleaned_data.get("redirect_uris", "").splitlines() if line.strip()
        ]


class GrantInline(admin.TabularInline):
    model = Grant
    fk_name = "agent"
    fields = readonly_fields = ("capability", "user", "expires_at", "state", "granted_by", "created_at")
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "grants"

    def get_queryset(self, request):
        return selectors.grants_visible_to(request.user)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return True  # the parent admin already decided

    @admin.display(description="state")
    def state(self, grant):
        return grant_state(grant)


def grant_state(grant: Grant) -> str:
    if grant.revoked_at is not None:
        return "revoked"
    if grant.expires_at is not None and grant.expires_at <= timezone.now():
        return "expired"
    return "active"


def key_ids(jwks: dict) -> list[str]:
    ids = []
    for member in (jwks or {}).get("keys", []):
        kid = member.get("kid")
        if not kid:
            try:
                kid = f"{jwk.JWK(**member).thumbprint()} (thumbprint)"
            except Exception:  # a stored key jwcrypto cannot read: show that, don't fail the page
                kid = "unreadable key"
        ids.append(kid)
    return ids


@admin.register(Agent)
class AgentAdmin(ServiceAdmin):
    visible_to = staticmethod(selectors.agents_visible_to)
    form = AgentForm
    list_display = ("name", "organization", "kind_name", "status", "owner", "client_id", "created_at")
    list_filter = ("status", "kind", ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "application__client_id", "owner__username")
    filter_horizontal = ("ceiling",)
    inlines = (GrantInline,)
    actions = ("activate_selected", "suspend_selected", "reactivate_selected", "retire_selected")

    def get_fields(self, request, obj=None):
        if obj is None:
            return (
                "organization",
                "name",
                "kind",
                "status",
                "owner",
                "description",
                "token_endpoint_auth_method",
                "chosen_client_id",
                "jwks",
                "jwks_uri",
                "dpop_bound_tokens_required",
                "redirect_uris",
                "ceiling",
            )
        return (
            "organization",
            "name",
            "kind",
            "status",
            "status_reason",
            "owner",
            "description",
            "token_endpoint_auth_method",
            "chosen_client_id",
            "jwks",
            "key_ids",
            "jwks_uri",
            "dpop_bound_tokens_required",
            "redirect_uris",
            "ceiling",
            "created_at",
            "updated_at",
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (
            "organization",
            "kind",
            "status",
            "status_reason",
            "key_ids",
            "created_at",
            "updated_at",
        )

    def has_change_permission(self, request, obj=None):
        # A retired agent is history: it can be looked at, not edited.
        return super().has_change_permission(request, obj) and (
            obj is None or obj.status != AgentStatus.RETIRED
        )

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("organization", request.user.organization_id)
        return initial

    @admin.display(description="kind", ordering="kind")
    def kind_name(self, agent):
        return agent.kind

    @admin.display(description="client_id", ordering="application__client_id")
    def client_id(self, agent):
        return agent.application.client_id if agent.application_id else "—"

    @admin.display(description="redirect URIs")
    def redirect_uris(self, agent):
        # Shown when the page is read-only; the form field of the same name edits it otherwise.
        uris = agent.application.redirect_uris.split() if agent.application_id else []
        return format_html_join(", ", "<code>{}</code>", ((uri,) for uri in uris)) or "—"

    @admin.display(description="key ids")
    def key_ids(self, agent):
        ids = key_ids(agent.jwks)
        if not ids:
            return "—"
        return format_html_join(", ", "<code>{}</code>", ((kid,) for kid in ids))

    # Writes ------------------------------------------------------------------------------------------

    def service_create(self, request, form):
        data = form.cleaned_data
        return services.agent_create(
            actor=request.user,
            organization=data["organization"],
            name=data["name"],
            kind=data["kind"],
            owner=data["owner"],
            description=data.get("description", ""),
            jwks=data.get("jwks") or {},
            jwks_uri=data.get("jwks_uri", ""),
            ceiling=data.get("ceiling", ()),
            redirect_uris=data.get("redirect_uris", []),
            status=data.get("status") or AgentStatus.ACTIVE,
            dpop_bound_tokens_required=bool(data.get("dpop_bound_tokens_required")),
            token_endpoint_auth_method=data.get("token_endpoint_auth_method")
            or TokenEndpointAuthMethod.PRIVATE_KEY_JWT,
            client_id=data.get("chosen_client_id") or None,
        )

    def service_update(self, request, obj, form):
        changes = changed(form, UPDATABLE + ("redirect_uris", "token_endpoint_auth_method"))
        if "chosen_client_id" in form.changed_data and form.cleaned_data.get("chosen_client_id"):
            changes["client_id"] = form.cleaned_data["chosen_client_id"]
        if not changes:
            return None
        return services.agent_update(actor=request.user, agent=self.fresh(obj), **changes)

    def service_save_related(self, request, obj, form, change):
        if change and "ceiling" in form.changed_data:
            services.agent_set_ceiling(
                actor=request.user, agent=obj, capabilities=form.cleaned_data["ceiling"]
            )

    # Lifecycle actions -------------------------------------------------------------------------------

    def _lifecycle(self, request, queryset, *, to: str, what: str, run):
        """Every status change goes through here: the step-up rule for ``to`` is asked in one place."""
        # Nothing selected that this admin may see: nothing will change, so nothing to prove.
        if auth_levels.agent_transition_needs_step_up(to) and queryset.exists():
            refusal = step_up_refusal_for_admin(request, what=what)
            if refusal is not None:
                return refusal
        return run()

    @admin.action(description="Activate selected pending agents")
    def activate_selected(self, request, queryset):
        return self._lifecycle(
            request,
            queryset,
            to=AgentStatus.ACTIVE,
            what="Activating agents",
            run=lambda: apply_each(
                self,
                request,
                queryset,
                verb="Activated",
                service=lambda *, actor, obj: services.agent_activate(actor=actor, agent=obj),
            ),
        )

    @admin.action(description="Suspend selected agents (kill switch)")
    def suspend_selected(self, request, queryset):
        return self._lifecycle(
            request,
            queryset,
            to=AgentStatus.SUSPENDED,
            what="Suspending agents",
            run=lambda: confirm_with_reason(
                self,
                request,
                queryset,
                title="Suspend agents",
                verb="Suspended",
                warning="Every token these agents hold stops working at once.",
                service=lambda *, actor, obj, reason: services.agent_suspend(
                    actor=actor, agent=obj, reason=reason
                ),
            ),
        )

    @admin.action(description="Reactivate selected suspended agents")
    def reactivate_selected(self, request, queryset):
        return self._lifecycle(
            request,
            queryset,
            to=AgentStatus.ACTIVE,
            what="Reactivating agents",
            run=lambda: confirm_with_reason(
                self,
                request,
                queryset,
                title="Reactivate agents",
                verb="Reactivated",
                service=lambda *, actor, obj, reason: services.agent_reactivate(
                    actor=actor, agent=obj, reason=reason
                ),
            ),
        )

    @admin.action(description="Retire selected agents (permanent)")
    def retire_selected(self, request, queryset):
        return self._lifecycle(
            request,
            queryset,
            to=AgentStatus.RETIRED,
            what="Retiring agents",
            run=lambda: confirm_with_reason(
                self,
                request,
                queryset,
                title="Retire agents",
                verb="Retired",
                warning="Retiring is permanent: tokens are revoked and open grants closed.",
                service=lambda *, actor, obj, reason: services.agent_retire(
                    actor=actor, agent=obj, reason=reason
                ),
            ),
        )
