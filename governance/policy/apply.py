"""Applying a policy file: check everything, then make every change in one transaction, or none.

Each change goes through a governance service, which writes its own audit event; one more event,
``policy.applied``, summarises the run.  A refused file writes nothing but a ``policy.refused`` event,
recorded in its own transaction after the rollback (and not at all on a dry run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from audit import services as audit
from audit.actions import Action, ActorType, Result
from audit.services import Actor
from governance.errors import GovernanceError
from governance.models import Organization
from governance.policy.errors import PolicyRefused, Problem
from governance.policy.loader import PolicyText, parse, read_file
from governance.policy.plan import make_plan
from governance.policy.planner import Change
from governance.policy.schema import read_spec
from governance.policy.world import Registry


@dataclass
class Outcome:
    changes: list[Change]
    applied: bool
    counts: dict[str, int]
    sha256: str


def policy_actor(file_name: str) -> Actor:
    return Actor(type=ActorType.SYSTEM, id="", label=f"policy apply {file_name}")


def apply_file(path: str | Path, *, dry_run: bool = False) -> Outcome:
    """Read, check and apply the file at ``path``.  Raises PolicyRefused (after recording it) or OSError."""
    name = Path(path).name
    try:
        text = read_file(path)
    except PolicyRefused as refusal:
        if not dry_run:
            record_refusal(refusal, actor=policy_actor(name), organization_slug=None)
        raise
    return apply_text(text, dry_run=dry_run)


def apply_bytes(raw: bytes, *, name: str, dry_run: bool = False) -> Outcome:
    try:
        text = parse(raw, name=name)
    except PolicyRefused as refusal:
        if not dry_run:
            record_refusal(refusal, actor=policy_actor(name), organization_slug=None)
        raise
    return apply_text(text, dry_run=dry_run)


def apply_text(text: PolicyText, *, dry_run: bool = False) -> Outcome:
    actor = policy_actor(text.name)
    spec, problems = read_spec(text.data)
    slugs = sorted({o.slug for o in spec.organizations})
    single = slugs[0] if len(slugs) == 1 else None
    try:
        if problems:
            raise PolicyRefused(text.name, problems, sha256=text.sha256)
        if dry_run:
            plan = make_plan(spec, file_name=text.name)
            if plan.problems:
                raise PolicyRefused(text.name, plan.problems, sha256=text.sha256)
            return Outcome(plan.ordered(), applied=False, counts=plan.counts(), sha256=text.sha256)
        with transaction.atomic():
            plan = make_plan(spec, file_name=text.name)
            if plan.problems:
                raise PolicyRefused(text.name, plan.problems, sha256=text.sha256)
            changes = plan.ordered()
            if not changes:
                return Outcome([], applied=False, counts={}, sha256=text.sha256)
            registry = Registry(plan.world)
            for change in changes:
                try:
                    change.run(registry, actor)
                except GovernanceError as exc:
                    raise PolicyRefused(
                        text.name, [Problem(change.path, exc.message)], sha256=text.sha256
                    ) from None
            counts = plan.counts()
            audit.record(
                action=Action.POLICY_APPLIED,
                actor=actor,
                organization=registry.objects.get(("organization", single)) if single else None,
                parameters={
                    "file": text.name,
                    "sha256": text.sha256,
                    "changes": len(changes),
                    "counts": counts,
                    "organizations": slugs,
                },
            )
            return Outcome(changes, applied=True, counts=counts, sha256=text.sha256)
    except PolicyRefused as refusal:
        if not dry_run:
            record_refusal(refusal, actor=actor, organization_slug=single)
        raise


def record_refusal(refusal: PolicyRefused, *, actor: Actor, organization_slug: str | None) -> None:
    with transaction.atomic():
        organization = (
            Organization.objects.filter(slug=organization_slug).first() if organization_slug else None
        )
        audit.record(
            action=Action.POLICY_REFUSED,
            actor=actor,
            result=Result.FAILURE,
            organization=organization,
            parameters={
                "file": refusal.file_name,
                "sha256": refusal.sha256,
                "problems": refusal.lines()[:20],
            },
        )
