from __future__ import annotations

import re

from django.contrib.auth.models import AbstractUser, UserManager
from django.core.exceptions import ValidationError
from django.db import models

from audit.actions import ActorType
from governance.text import text_problem

# User attributes: what capability constraints compare a call's parameters with ("$user.patient_id").
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
MAX_ATTRIBUTES, ATTRIBUTE_VALUE_LENGTH = 32, 200
# Whole numbers that survive a round trip through any JSON parser (JavaScript's safe integers).
ATTRIBUTE_INTEGER_LIMIT = 2**53 - 1


def attribute_problems(value) -> list[tuple[str, str]]:
    """(attribute name or "", reason) for each way ``value`` is not a flat map of user attributes.

    Names are identifier-like; values are strings (1 to 200 characters, single-line, no control or
    bidirectional formatting characters) or whole numbers.  Reasons never echo a value.
    """
    if not isinstance(value, dict):
        return [("", "must be a mapping of attribute names to values")]
    if len(value) > MAX_ATTRIBUTES:
        return [("", f"holds {len(value)} attributes; at most {MAX_ATTRIBUTES} are allowed")]
    problems = []
    for name, item in value.items():
        if not isinstance(name, str) or not ATTRIBUTE_NAME.match(name):
            problems.append(
                ("", "attribute names are lowercase letters, digits and _, starting with a letter")
            )
            continue
        if isinstance(item, bool) or not isinstance(item, str | int):
            problems.append((name, "must be a string or a whole number"))
        elif isinstance(item, int):
            if abs(item) > ATTRIBUTE_INTEGER_LIMIT:
                problems.append(
                    (name, f"must be between -{ATTRIBUTE_INTEGER_LIMIT} and {ATTRIBUTE_INTEGER_LIMIT}")
                )
        elif not item:
            problems.append((name, "must not be empty"))
        elif reason := text_problem(item, max_length=ATTRIBUTE_VALUE_LENGTH):
            problems.append((name, reason))
    return problems


def validate_attributes(value) -> None:
    problems = attribute_problems(value)
    if problems:
        raise ValidationError([f"{name}: {reason}" if name else reason for name, reason in problems])


class JSONType(models.Func):
    """The JSON type name of a value ('object', 'array', …) on SQLite and PostgreSQL, for CHECKs."""

    function = "json_type"
    output_field = models.CharField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="jsonb_typeof", **extra_context)


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
    attributes = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_attributes],
        help_text='What capability constraints refer to as $user.<name>, e.g. {"patient_id": "p-001"}.',
    )

    objects = UserManager()

    class Meta:
        ordering = ["username"]
        constraints = [
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="user_role_valid"),
            models.CheckConstraint(
                condition=models.lookups.Exact(JSONType("attributes"), "object"),
                name="user_attributes_object",
            ),
        ]

    def __str__(self) -> str:
        return self.username
