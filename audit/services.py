"""The one entry point that writes audit events, and signed checkpoints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from audit import chain, context, signing
from audit.actions import Action, ActorType, Result
from audit.masking import clean, clean_string
from audit.models import AuditCheckpoint, AuditEvent

# Key of the PostgreSQL advisory lock that serialises appends to the chain.
CHAIN_LOCK_KEY = 0x6761746568  # "gateh"


@dataclass(frozen=True)
class Actor:
    """Who did it, when that is not a model instance (a command line, a scheduled task)."""

    type: str
    id: str = ""
    label: str = ""


SYSTEM = Actor(type=ActorType.SYSTEM, label="system")


def _snapshot(obj) -> tuple[str, str, str]:
    """(type, id, label) of a user, agent, tool server or :class:`Actor`."""
    if obj is None:
        return ActorType.SYSTEM, "", "system"
    if isinstance(obj, Actor):
        return str(obj.type), clean_string(obj.id, 64), clean_string(obj.label, 255)
    kind = getattr(obj, "audit_actor_type", None)
    if kind is None:
        if getattr(obj, "is_anonymous", False):
            return ActorType.ANONYMOUS, "", "anonymous"
        raise TypeError(f"cannot record {type(obj).__name__} as an audit actor")
    return kind, str(obj.pk), clean_string(str(obj), 255)


def _label(obj) -> str:
    return "" if obj is None else clean_string(str(obj), 255)


def _pk(obj) -> int | None:
    return None if obj is None else obj.pk


def record(
    *,
    action: Action,
    actor=None,
    result: Result = Result.SUCCESS,
    organization=None,
    agent=None,
    on_behalf_of=None,
    target=None,
    capabilities: Iterable[str] = (),
    parameters: Mapping[str, Any] | None = None,
    using: str = "default",
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction.

    Call it from the service that makes the change, after the change, so that both commit or neither
    does.  The chain head is locked until the transaction ends; keep work after this call short.
    """
    action = Action(action)
    result = Result(result)
    actor_type, actor_id, actor_label = _snapshot(actor)
    request = context.current()
    organization_id = getattr(organization, "pk", organization)
    if organization_id is None:
        organization_id = next(
            (getattr(o, "organization_id", None) for o in (agent, target, on_behalf_of, actor) if o is not None
             and getattr(o, "organization_id", None) is not None),
            None,
        )
    values = {
        "occurred_at": timezone.now(),
        "action": action.value,
        "result": result.value,
        "actor_type": str(actor_type),
        "actor_id": actor_id,
        "actor_label": actor_label,
        "organization_id": organization_id,
        "agent_id": _pk(agent),
        "agent_label": _label(agent),
        "on_behalf_of_id": _pk(on_behalf_of),
        "on_behalf_of_label": _label(on_behalf_of),
        "target_type": "" if target is None else target._meta.label_lower,
        "target_id": "" if target is None else str(target.pk),
        "target_label": _label(target),
        "capabilities": " ".join(sorted({clean_string(str(c), 255) for c in capabilities})),
        "parameters": chain.canonical_json(clean(dict(parameters or {}))),
        "request_id": request.request_id,
        "client_ip": request.client_ip,
    }
    with transaction.atomic(using=using):
        connection = connections[using]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
            # SQLite: transaction_mode=IMMEDIATE already holds the database's write lock.
            cursor.execute("SELECT seq, hash FROM audit_auditevent ORDER BY seq DESC LIMIT 1")
            head = cursor.fetchone()
        seq, prev_hash = (head[0] + 1, head[1]) if head else (1, chain.GENESIS_HASH)
        values["seq"] = seq
        values["prev_hash"] = prev_hash
        values["hash"] = chain.event_hash(tuple(values[name] for name in chain.FIELDS))
        event = AuditEvent(**values)
        event.save(using=using)
        every = settings.AUDIT_CHECKPOINT_EVERY
        if every and seq % every == 0:
            _sign_checkpoint(seq=seq, event_hash=values["hash"], using=using)
    return event


def checkpoint_message(*, seq: int, event_hash: str, created_at, key_id: str) -> bytes:
    return chain.canonical_json(
        ["gatehouse.audit.checkpoint.v1", seq, event_hash, chain.timestamp(created_at), key_id]
    ).encode()


def _sign_checkpoint(*, seq: int, event_hash: str, using: str) -> AuditCheckpoint:
    created_at = timezone.now()
    key_id = signing.current_key_id()
    message = checkpoint_message(seq=seq, event_hash=event_hash, created_at=created_at, key_id=key_id)
    _, signature = signing.sign(message)
    checkpoint = AuditCheckpoint(
        seq=seq, event_hash=event_hash, created_at=created_at, key_id=key_id, signature=signature
    )
    checkpoint.save(using=using)
    return checkpoint


def checkpoint_create(*, using: str = "default") -> AuditCheckpoint | None:
    """Sign the current head of the chain; None when the log is empty or already checkpointed there."""
    with transaction.atomic(using=using):
        head = AuditEvent.objects.using(using).order_by("-seq").values_list("seq", "hash").first()
        if head is None:
            return None
        last = AuditCheckpoint.objects.using(using).order_by("-seq").values_list("seq", flat=True).first()
        if last == head[0]:
            return None
        return _sign_checkpoint(seq=head[0], event_hash=head[1], using=using)
