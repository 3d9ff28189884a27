"""Organizations and users."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from audit import services as audit
from audit.actions import Action
from governance.errors import InvalidInput, InvalidState
from governance.models import Organization, Role, User
from governance.models.organizations import attribute_problems
from governance.services._common import (
    Principal,
    apply_changes,
    database_rules,
    ensure_can_manage,
    ensure_can_manage_user,
    reverted_on_error,
    validate,
)
from governance.services.tokens import revoke_user_tokens


def organization_create(*, actor: Principal, slug: str, name: str) -> Organization:
    ensure_can_manage(actor, None)
    organization = Organization(slug=slug, name=name)
    validate(organization)
    with database_rules(), transaction.atomic():
        organization.save()
        audit.record(
            action=Action.ORGANIZATION_CREATED,
            actor=actor,
            organization=organization,
            target=organization,
            parameters={"slug": slug, "name": name},
        )
    return organization


def organization_update(*, actor: Principal, organization: Organization, name: str) -> Organization:
    ensure_can_manage(actor, organization)
    with reverted_on_error(organization, ["name"]):
        diff = apply_changes(organization, {"name": name}, allowed={"name"})
        if not diff:
            return organization
        validate(organization)
        with database_rules(), transaction.atomic():
            organization.save(update_fields=list(diff))
            audit.record(
                action=Action.ORGANIZATION_UPDATED,
                actor=actor,
                organization=organization,
                target=organization,
                parameters={"changes": diff},
            )
    return organization


def user_create(
    *,
    actor: Principal,
    organization: Organization,
    username: str,
    email: str = "",
    role: str = Role.MEMBER,
    first_name: str = "",
    last_name: str = "",
    password: str | None = None,
    attributes: dict[str, str | int] | None = None,
) -> User:
    """A user of the organization; ``attributes`` are what capability constraints compare with."""
    ensure_can_manage(actor, organization)
    if role not in Role.values:
        raise InvalidInput(f"Unknown role {role!r}; use one of {', '.join(Role.values)}.")
    if attributes is not None:
        _check_attributes(attributes)
    user = User(
        organization=organization,
        username=username,
        email=email,
        role=role,
        first_name=first_name,
        last_name=last_name,
        is_staff=role == Role.ADMIN,
        attributes={} if attributes is None else attributes,
    )
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    validate(user, exclude=["password"])
    with database_rules(), transaction.atomic():
        user.save()
        audit.record(
            action=Action.USER_CREATED,
            actor=actor,
            organization=organization,
            target=user,
            parameters={"username": username, "email": email, "role": role, "attributes": user.attributes},
        )
    return user


def user_update(*, actor: Principal, user: User, **changes) -> User:
    """Change a user's profile, attributes or role; a role change is its own action name.

    No change, nothing written.
    """
    ensure_can_manage_user(actor, user)
    if "role" in changes and changes["role"] not in Role.values:
        raise InvalidInput(f"Unknown role {changes['role']!r}; use one of {', '.join(Role.values)}.")
    if "attributes" in changes:
        _check_attributes(changes["attributes"])
    with reverted_on_error(user, [*changes, "is_staff"]):
        diff = apply_changes(
            user, changes, allowed={"email", "first_name", "last_name", "role", "attributes"}
        )
        if not diff:
            return user
        if "role" in diff:
            user.is_staff = user.role == Role.ADMIN or user.is_superuser
        validate(user, exclude=["password"])
        action = Action.USER_ROLE_CHANGED if "role" in diff else Action.USER_UPDATED
        with database_rules(), transaction.atomic():
            user.save()
            audit.record(action=action, actor=actor, target=user, parameters={"changes": diff})
    return user


def demo_admin_ensure(
    *, actor: Principal, organization: Organization, username: str, password: str
) -> tuple[User, bool]:
    """The default run's demo admin: created, or reset to a superuser administering ``organization`` with
    ``password``; (user, created).  Refused outside DEBUG: a production instance has no demo login.
    """
    if not settings.DEBUG:
        raise InvalidState("The demo admin exists only in the default (DEBUG) run.")
    ensure_can_manage(actor, organization)
    user = User.objects.filter(username=username).first()
    created = user is None
    if created:
        user = User(username=username, email="admin@localhost")
    user.organization, user.role = organization, Role.ADMIN
    user.is_staff = user.is_superuser = user.is_active = True
    user.set_password(password)
    validate(user, exclude=["password"])
    with database_rules(), transaction.atomic():
        user.save()
        audit.record(
            action=Action.USER_CREATED if created else Action.USER_UPDATED,
            actor=actor,
            organization=organization,
            target=user,
            parameters={"username": username, "role": Role.ADMIN, "superuser": True, "demo": True},
        )
    return user, created


def _check_attributes(attributes) -> None:
    """The attribute rule, also for the empty values (None, []) that the field's validators skip."""
    problems = attribute_problems(attributes)
    if problems:
        messages = [f"{name}: {reason}" if name else reason for name, reason in problems]
        raise InvalidInput(f"attributes: {messages[0]}", errors={"attributes": messages})


def user_deactivate(*, actor: Principal, user: User, reason: str) -> User:
    """Block sign-in and revoke every token minted for the user, whatever the client.  Again: no-op."""
    ensure_can_manage_user(actor, user)
    if not user.is_active:
        return user
    with reverted_on_error(user, ["is_active"]), database_rules(), transaction.atomic():
        user.is_active = False
        user.save(update_fields=["is_active"])
        revoked = revoke_user_tokens(user)
        audit.record(
            action=Action.USER_DEACTIVATED,
            actor=actor,
            target=user,
            parameters={"reason": reason, "revoked": revoked},
        )
    return user
