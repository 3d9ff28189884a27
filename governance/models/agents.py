from __future__ import annotations

from django.conf import settings
from django.db import models

from audit.actions import ActorType
from governance.models.capabilities import Capability
from governance.models.organizations import Organization


class AgentKind(models.TextChoices):
    INTERACTIVE = "interactive", "Interactive (acts for users)"
    BACKGROUND = "background", "Background (service identity)"


class AgentStatus(models.TextChoices):
    PENDING = "pending", "Pending activation"
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    RETIRED = "retired", "Retired"


class TokenEndpointAuthMethod(models.TextChoices):
    PRIVATE_KEY_JWT = "private_key_jwt", "Signed assertion (RFC 7523)"
    CLIENT_SECRET_BASIC = "client_secret_basic", "Client secret, HTTP Basic"
    CLIENT_SECRET_POST = "client_secret_post", "Client secret, form body"
    NONE = "none", "Public client (PKCE only)"


class Agent(models.Model):
    """An AI agent's identity, backed by an OAuth client."""

    audit_actor_type = ActorType.AGENT
    Kind = AgentKind
    Status = AgentStatus

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="agents")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=AgentKind.choices)
    status = models.CharField(max_length=16, choices=AgentStatus.choices, default=AgentStatus.ACTIVE)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_agents")
    application = models.OneToOneField(
        "oauth2_provider.Application",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="agent",
    )
    jwks = models.JSONField(default=dict, blank=True, help_text="Public keys (RFC 7517 JWK Set).")
    jwks_uri = models.URLField(max_length=500, blank=True)
    token_endpoint_auth_method = models.CharField(
        max_length=32,
        choices=TokenEndpointAuthMethod.choices,
        default=TokenEndpointAuthMethod.PRIVATE_KEY_JWT,
    )
    default_scope = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Capabilities a token request without scope gets (may be empty).",
    )
    ceiling = models.ManyToManyField(
        Capability,
        blank=True,
        related_name="agents_allowed",
        help_text="Every capability this agent may ever be granted.",
    )
    dpop_bound_tokens_required = models.BooleanField(
        default=False,
        help_text="Refuse token requests without a DPoP proof (RFC 9449 dpop_bound_access_tokens).",
    )
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization__slug", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="agent_name_unique_in_org"),
            models.CheckConstraint(condition=models.Q(kind__in=AgentKind.values), name="agent_kind_valid"),
            models.CheckConstraint(
                condition=models.Q(status__in=AgentStatus.values), name="agent_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == AgentStatus.ACTIVE
