from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from audit.actions import ActorType
from governance.models.organizations import Organization, Role

# A capability key is an OAuth scope token (RFC 6749 §3.3) of a narrow shape: dotted lowercase words.
# The pattern ends in \Z, not $: "$" also matches before a trailing newline in Python's re (which SQLite's
# REGEXP uses), so "records.read\n" would pass.  PostgreSQL's ~ understands \Z as end of string too.
CAPABILITY_KEY_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z"
CAPABILITY_KEY = RegexValidator(
    CAPABILITY_KEY_PATTERN,
    "A capability key is dotted lowercase words, such as records.read_own.",
)


class ToolServer(models.Model):
    """A resource server: the audience (RFC 8707 resource) that tokens are minted for."""

    audit_actor_type = ActorType.TOOL_SERVER

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="tool_servers")
    name = models.CharField(max_length=200)
    audience = models.URLField(max_length=500, unique=True, help_text="Absolute URI, no fragment.")
    description = models.TextField(blank=True)
    application = models.OneToOneField(
        "oauth2_provider.Application",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="tool_server",
        help_text="The credentials this tool server uses for introspection and decisions.",
    )
    jwks = models.JSONField(default=dict, blank=True, help_text="Public keys for private_key_jwt (RFC 7517).")
    jwks_uri = models.URLField(max_length=500, blank=True)
    token_endpoint_auth_method = models.CharField(max_length=32, default="private_key_jwt")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization__slug", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="toolserver_name_unique_in_org"),
        ]

    def __str__(self) -> str:
        return self.name


class RiskLevel(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"

    @classmethod
    def high_risk(cls) -> frozenset[str]:
        """The levels whose grant is an approver's decision and needs a fresh second factor."""
        return frozenset({cls.HIGH, cls.CRITICAL})


class Capability(models.Model):
    """A narrow named permission on one tool server; its key is the OAuth scope string."""

    tool_server = models.ForeignKey(ToolServer, on_delete=models.PROTECT, related_name="capabilities")
    key = models.CharField(max_length=128, validators=[CAPABILITY_KEY])
    description = models.TextField(blank=True)
    risk_level = models.CharField(max_length=16, choices=RiskLevel.choices, default=RiskLevel.LOW)
    requires_approval = models.BooleanField(default=False)
    approvals_required = models.PositiveSmallIntegerField(
        default=0, help_text="How many approvers must agree (0 when no approval is needed)."
    )
    requires_step_up = models.BooleanField(default=False)
    max_token_lifetime = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(1)], help_text="Seconds."
    )
    rate_limit_per_minute = models.PositiveIntegerField(null=True, blank=True)
    daily_quota = models.PositiveIntegerField(null=True, blank=True)
    constraints = models.JSONField(
        default=dict,
        blank=True,
        help_text='Parameter constraints, e.g. {"patient_id": {"equals": "$user"}}.',
    )
    # Approval policy (approvals app, docs/approvals.md): who may approve a request for this capability,
    # who never may, and what one denial does.  The requester never approves their own request.
    approver_role = models.CharField(
        max_length=16,
        choices=Role.choices,
        blank=True,
        default=Role.APPROVER,
        help_text="Everyone with this role in the organization may approve (blank: nobody by role).",
    )
    named_approvers = models.ManyToManyField(
        "governance.User",
        blank=True,
        related_name="approvable_capabilities",
        help_text="These people may approve as well, whatever their role.",
    )
    on_behalf_of_may_approve = models.BooleanField(
        default=False, help_text="The user the agent acts for may approve their own agent's request."
    )
    exclude_agent_owner = models.BooleanField(
        default=False, help_text="The agent's owner never approves this agent's requests."
    )
    tolerate_denials = models.BooleanField(
        default=False,
        help_text="Off: one denial ends the request.  On: it ends only when too few approvers remain.",
    )
    approval_expiry_seconds = models.PositiveIntegerField(
        default=3600,
        validators=[MinValueValidator(60), MaxValueValidator(7 * 24 * 3600)],
        help_text="How long a request waits for approvers (seconds, 60 to 7 days).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tool_server__name", "key"]
        verbose_name_plural = "capabilities"
        constraints = [
            models.UniqueConstraint(fields=["tool_server", "key"], name="capability_key_unique_per_server"),
            models.CheckConstraint(
                condition=models.Q(key__regex=CAPABILITY_KEY_PATTERN),
                name="capability_key_shape",
            ),
            models.CheckConstraint(
                condition=models.Q(requires_approval=False, approvals_required=0)
                | models.Q(requires_approval=True, approvals_required__gte=1),
                name="capability_approval_count_consistent",
            ),
            models.CheckConstraint(
                condition=models.Q(max_token_lifetime__gte=1), name="capability_lifetime_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(risk_level__in=RiskLevel.values), name="capability_risk_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(approver_role__in=[*Role.values, ""]),
                name="capability_approver_role_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    approval_expiry_seconds__gte=60, approval_expiry_seconds__lte=7 * 24 * 3600
                ),
                name="capability_approval_expiry_bounded",
            ),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def organization_id(self) -> int:
        return self.tool_server.organization_id
