"""Helpers shared by the services: who may act, input validation, recording changes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models

from audit.actions import ActorType
from audit.services import Actor
from governance.errors import Conflict, InvalidInput, NotPermitted
from governance.models import Organization, Role, User
from governance.text import text_problem

Principal = User | Actor


def ensure_can_manage(actor: Principal, organization: Organization | None) -> None:
    """Admins manage their own organization; superusers and system actors (CLI, tasks) manage all."""
    if isinstance(actor, Actor):
        if actor.type == ActorType.SYSTEM:
            return
        raise NotPermitted("Only people and system jobs can change governance data.")
    if not isinstance(actor, User) or not actor.is_active:
        raise NotPermitted("You are not allowed to make this change.")
    if actor.is_superuser:
        return
    if actor.role == Role.ADMIN and organization is not None and actor.organization_id == organization.pk:
        return
    raise NotPermitted("You are not allowed to make this change.")


def ensure_can_manage_user(actor: Principal, user: User) -> None:
    """As :func:`ensure_can_manage`, and only a superuser (or the system) changes a superuser."""
    ensure_can_manage(actor, user.organization)
    if user.is_superuser and isinstance(actor, User) and not actor.is_superuser:
        raise NotPermitted("You are not allowed to make this change.")


def validate(instance: models.Model, *, exclude: list[str] | None = None) -> None:
    """The model's own checks, after the text rule (:mod:`governance.text`) on every text column.

    The text rule comes first: a NUL byte would otherwise reach PostgreSQL (which refuses it with a
    DataError) in the uniqueness queries of ``full_clean``.
    """
    errors = _text_errors(instance, exclude or [])
    if errors:
        first = next(iter(errors.items()))
        raise InvalidInput(f"{first[0]}: {first[1][0]}", errors=errors)
    try:
        instance.full_clean(exclude=exclude, validate_unique=True, validate_constraints=True)
    except ValidationError as exc:
        errors = {field: [str(m) for m in messages] for field, messages in exc.message_dict.items()}
        first = next(iter(errors.items()))
        raise InvalidInput(f"{first[0]}: {first[1][0]}", errors=errors) from None


def _text_errors(instance: models.Model, exclude: list[str]) -> dict[str, list[str]]:
    """Names, descriptions, reasons: no control or bidirectional formatting characters (line breaks and
    tabs only in multi-line text).  Lengths are left to the fields' own ``max_length``."""
    errors = {}
    for field in instance._meta.concrete_fields:
        if field.name in exclude or not isinstance(field, models.CharField | models.TextField):
            continue
        value = getattr(instance, field.attname)
        if isinstance(value, str):
            multiline = isinstance(field, models.TextField)
            problem = text_problem(value, max_length=len(value), multiline=multiline)
            if problem:
                errors[field.name] = [f"This value {problem}."]
    return errors


def integrity(exc: IntegrityError) -> Conflict:
    """A database rule refused the change: say which, without leaking SQL or values."""
    text = str(exc).splitlines()[0] if str(exc) else "a database rule refused the change"
    return Conflict(f"The database refused the change: {text}")


@contextmanager
def database_rules() -> Iterator[None]:
    """Turn a refusal by a constraint or trigger into :class:`Conflict`.

    Use it outside ``transaction.atomic()`` (``with database_rules(), transaction.atomic():``) so the
    transaction has rolled back, change and audit event together, before the domain error is raised.
    """
    try:
        yield
    except IntegrityError as exc:
        raise integrity(exc) from exc


@contextmanager
def reverted_on_error(instance: models.Model, fields: Iterator[str] | list[str]) -> Iterator[None]:
    """Put the instance's fields back when the change fails, so the caller's object matches the database."""
    saved = {field: getattr(instance, field) for field in fields}
    try:
        yield
    except BaseException:
        for field, value in saved.items():
            setattr(instance, field, value)
        raise


def apply_changes(instance: models.Model, changes: dict[str, Any], *, allowed: set[str]) -> dict[str, list]:
    """Set the allowed fields that differ; return {field: [old, new]} for the audit event."""
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"These fields cannot be changed here: {', '.join(sorted(unknown))}.")
    diff: dict[str, list] = {}
    for field, new in changes.items():
        old = getattr(instance, field)
        if isinstance(old, models.Model) or isinstance(new, models.Model):
            if getattr(old, "pk", None) != getattr(new, "pk", None):
                diff[field] = [str(old) if old else None, str(new) if new else None]
                setattr(instance, field, new)
        elif old != new:
            diff[field] = [old, new]
            setattr(instance, field, new)
    return diff
