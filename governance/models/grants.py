from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from governance.models.agents import Agent
from governance.models.capabilities import Capability
from governance.models.organizations import Organization


class GrantQuerySet(models.QuerySet):
    def active(self, *, at=None):
        at = at or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=at)
        )


class Grant(models.Model):
    """user × agent × capability (no user for a background agent's service grant).

    Cross-table rules (same organization, inside the agent's ceiling, user present exactly for
    interactive agents) are enforced by database triggers; see governance/migrations/_triggers.py.
    """

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="grants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="grants"
    )
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="grants")
    capability = models.ForeignKey(Capability, on_delete=models.PROTECT, related_name="grants")
    expires_at = models.DateTimeField(null=True, blank=True)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    revoke_reason = models.TextField(blank=True)

    objects = GrantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "agent", "capability"],
                condition=models.Q(revoked_at__isnull=True, user__isnull=False),
                name="grant_one_open_per_user_triple",
            ),
            models.UniqueConstraint(
                fields=["agent", "capability"],
                condition=models.Q(revoked_at__isnull=True, user__isnull=True),
                name="grant_one_open_per_service_pair",
            ),
            models.CheckConstraint(
                condition=models.Q(revoked_at__isnull=True)
                | models.Q(revoked_at__gte=models.F("created_at")),
                name="grant_revoked_after_created",
            ),
        ]
        indexes = [models.Index(fields=["agent", "user", "revoked_at"], name="grant_lookup")]

    def __str__(self) -> str:
        who = self.user.username if self.user_id else "service"
        return f"{self.capability.key} for {who} via {self.agent.name}"

    def is_active(self, *, at=None) -> bool:
        at = at or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > at)
