from __future__ import annotations

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models

from audit.actions import ActorType


class Organization(models.Model):
    """A tenant: users, agents and tool servers belong to exactly one."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    APPROVER = "approver", "Approver"
    MEMBER = "member", "Member"
    AUDITOR = "auditor", "Auditor"


class User(AbstractUser):
    audit_actor_type = ActorType.USER

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="users", null=True, blank=True
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    objects = UserManager()

    class Meta:
        ordering = ["username"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="user_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.username
