"""The one entry point that writes audit events, and signed checkpoints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import NotSupportedError, connections, transaction
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
    values = event_values(
        action=action,
        actor=actor,
        result=result,
        organization=organization,
        agent=agent,
        on_behalf_of=on_behalf_of,
        target=target,
        capabilities=capabilities,
        parameters=parameters,
    )
    with transaction.atomic(using=using):
        connection = connections[using]
        if connection.vendor == "postgresql":
            event = _append_postgresql(connection, values)
        elif connection.vendor == "sqlite":
            event = _append_locked(connection, values)
        else:
            raise NotSupportedError(f"the audit chain cannot serialise appends on {connection.vendor}")
        every = settings.AUDIT_CHECKPOINT_EVERY
        if every and event.seq % every == 0:
            _sign_checkpoint(seq=event.seq, event_hash=event.hash, using=using)
    return event


def event_values(
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
) -> dict[str, Any]:
    """The stored content of an event (every field but ``seq``, ``prev_hash`` and ``hash``), cleaned."""
    action = Action(action)
    result = Result(result)
    actor_type, actor_id, actor_label = _snapshot(actor)
    request = context.current()
    organization_id = getattr(organization, "pk", organization)
    if organization_id is None:
        related = (getattr(o, "organization_id", None) for o in (agent, target, on_behalf_of, actor))
        organization_id = next((pk for pk in related if pk is not None), None)
    return {
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
        "target_id": "" if target is None else clean_string(str(target.pk), 64),
        "target_label": _label(target),
        "capabilities": " ".join(sorted({clean_string(str(c), 255) for c in capabilities})),
        "parameters": chain.canonical_json(clean(dict(parameters or {}))),
        "request_id": request.request_id,
        "client_ip": chain.canonical_ip(request.client_ip),
    }


# Columns written by an append, after ``seq``; ``prev_hash`` and ``hash`` come last.
_CONTENT = chain.FIELDS[1:-1]

# One round trip on PostgreSQL: audit_append() (migration 0003) takes the chain lock, reads the head, builds
# the canonical bytes from the body computed here, hashes and inserts.  Only the COMMIT remains between
# taking the lock and releasing it, which is what bounds append throughput.
_APPEND_SQL = (
    "SELECT o_seq, o_prev_hash, o_hash FROM audit_append("
    "%s::bigint, %s::text, %s::text, %s::text, %s::timestamptz, "
    "%s::text, %s::text, %s::text, %s::text, %s::text, %s::bigint, %s::bigint, %s::text, %s::bigint, "
    "%s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::text)"
)


def _append_postgresql(connection, values: dict) -> AuditEvent:
    content = tuple(values[name] for name in _CONTENT)
    with connection.cursor() as cursor:
        cursor.execute(
            _APPEND_SQL,
            [CHAIN_LOCK_KEY, chain.GENESIS_HASH, chain.VERSION_JSON, chain.content_body(content), *content],
        )
        seq, prev_hash, digest = cursor.fetchone()
    if chain.event_hash((seq, *content, prev_hash)) != digest:
        # The database built different bytes than the chain's definition (e.g. a non-UTF-8 database).
        # Refuse the event, and with it the caller's change, rather than commit an unverifiable row.
        raise RuntimeError("audit_append() produced a hash that does not match audit.chain")
    return _loaded(AuditEvent(seq=seq, prev_hash=prev_hash, hash=digest, **values), connection.alias)


def _append_locked(connection, values: dict) -> AuditEvent:
    """Read the head, hash in Python, insert: the caller's transaction must already serialise appends
    (SQLite: transaction_mode=IMMEDIATE holds the database's write lock from BEGIN)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq, hash FROM audit_auditevent ORDER BY seq DESC LIMIT 1")
        head = cursor.fetchone()
    seq, prev_hash = (head[0] + 1, head[1]) if head else (1, chain.GENESIS_HASH)
    digest = chain.event_hash((seq, *(values[name] for name in _CONTENT), prev_hash))
    event = AuditEvent(seq=seq, prev_hash=prev_hash, hash=digest, **values)
    event.save(using=connection.alias)
    return event


def _loaded(event: AuditEvent, alias: str) -> AuditEvent:
    """Mark an instance inserted by raw SQL as stored, so that saving it again is refused."""
    event._state.adding = False
    event._state.db = alias
    return event


def _lock_chain(using: str) -> None:
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])


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
        _lock_chain(using)  # appends and other checkpoints wait; SQLite's IMMEDIATE BEGIN already did this
        head = AuditEvent.objects.using(using).order_by("-seq").values_list("seq", "hash").first()
        if head is None:
            return None
        last = AuditCheckpoint.objects.using(using).order_by("-seq").values_list("seq", flat=True).first()
        if last == head[0]:
            return None
        return _sign_checkpoint(seq=head[0], event_hash=head[1], using=using)
