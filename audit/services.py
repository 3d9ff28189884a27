"""The one entry point that writes audit events, and signed checkpoints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import NotSupportedError, connections, transaction
from django.utils import timezone

from audit import chain, context, signing
from audit.actions import Action, ActorType, Result
from audit.masking import clean, clean_string
from audit.models import AuditCheckpoint, AuditEvent
from audit.selectors import lane_heads
from config.db import prepared_cursor

# PostgreSQL advisory locks: lane L's appends are serialised by LANE_LOCK_BASE + L, checkpoints by their own.
LANE_LOCK_BASE = 0x6761746568_00  # "gateh", then the lane number
CHECKPOINT_LOCK_KEY = LANE_LOCK_BASE + 0xFF


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
    """Append one event to the log, inside the caller's transaction.

    Call it from the service that makes the change, after the change, so that both commit or neither
    does.  The event's lane is locked until the transaction ends (later events of the same transaction go
    to the same lane); keep work after this call short.
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
    connection = connections[using]
    if (
        connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and not settings.AUDIT_CHECKPOINT_EVERY
    ):
        # An event on its own (no change beside it, e.g. a decision): the append is one statement, which
        # PostgreSQL runs as its own transaction; BEGIN and COMMIT would add two round trips and nothing else.
        return _append_postgresql(connection, values)
    # No savepoint inside the caller's transaction (two round trips saved): a failed append marks the whole
    # transaction for rollback, so the change it describes can never commit without its event.
    with transaction.atomic(using=using, savepoint=False):
        connection = connections[using]
        if connection.vendor == "postgresql":
            event = _append_postgresql(connection, values)
        elif connection.vendor == "sqlite":
            event = _append_locked(connection, values)
        else:
            raise NotSupportedError(f"the audit chain cannot serialise appends on {connection.vendor}")
        every = settings.AUDIT_CHECKPOINT_EVERY
        if every and event.lane_seq % every == 0:
            _lock_checkpoints(using)
            _checkpoint_heads(using)
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
    """The stored content of an event (the :data:`audit.chain.CONTENT` fields), cleaned."""
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


# One round trip on PostgreSQL: audit_append() (migration 0005) picks a free lane (taking its advisory lock),
# reads the lane's head, draws the global seq, builds the canonical bytes from the body computed here, hashes
# and inserts.  Only the COMMIT remains between taking the lane lock and releasing it; with several lanes,
# appends in different lanes commit side by side and share WAL flushes (group commit).
_APPEND_SQL = (
    "SELECT o_seq, o_lane, o_lane_seq, o_prev_hash, o_hash FROM audit_append("
    "%s::bigint, %s::integer, %s::text[], %s::text, %s::text, %s::timestamptz, "
    "%s::text, %s::text, %s::text, %s::text, %s::text, %s::bigint, %s::bigint, %s::text, %s::bigint, "
    "%s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::text)"
)

_GENESIS = [chain.genesis_hash(lane) for lane in range(chain.MAX_LANES)]


def chain_lanes() -> int:
    """``AUDIT_CHAIN_LANES``, checked: the number of lanes appends spread over on PostgreSQL."""
    lanes = settings.AUDIT_CHAIN_LANES
    if not isinstance(lanes, int) or not 1 <= lanes <= chain.MAX_LANES:
        raise ImproperlyConfigured(f"AUDIT_CHAIN_LANES must be an integer from 1 to {chain.MAX_LANES}.")
    return lanes


def append_call(values: dict) -> tuple[str, list]:
    """The ``audit_append(...)`` call for an event (PostgreSQL): SQL text and its parameters.

    :func:`record` runs it on its own; a caller that must write a change and its event in one statement
    (the token endpoint's direct path) embeds it, then passes the row it returns to :func:`check_appended`.
    """
    content = tuple(values[name] for name in chain.CONTENT)
    lanes = chain_lanes()
    params = [LANE_LOCK_BASE, lanes, _GENESIS[:lanes], chain.VERSION_JSON, chain.content_body(content)]
    return _APPEND_SQL, params + list(content)


def check_appended(values: dict, row) -> None:
    """Refuse the row ``audit_append()`` returned if its hash is not the chain's for ``values``."""
    seq, lane, lane_seq, prev_hash, digest = row
    content = tuple(values[name] for name in chain.CONTENT)
    if chain.event_hash((seq, lane, lane_seq, *content, prev_hash)) != digest:
        # The database built different bytes than the chain's definition (e.g. a non-UTF-8 database).
        # Refuse the event, and with it the caller's change, rather than commit an unverifiable row.
        raise RuntimeError("audit_append() produced a hash that does not match audit.chain")


def appended(values: dict, row, alias: str) -> AuditEvent:
    """The event ``audit_append()`` stored, from the row it returned; refuses a hash the chain disowns."""
    check_appended(values, row)
    seq, lane, lane_seq, prev_hash, digest = row
    event = AuditEvent(seq=seq, lane=lane, lane_seq=lane_seq, prev_hash=prev_hash, hash=digest, **values)
    return _loaded(event, alias)


def _append_postgresql(connection, values: dict) -> AuditEvent:
    sql, params = append_call(values)
    with prepared_cursor(connection) as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return appended(values, row, connection.alias)


def _append_locked(connection, values: dict) -> AuditEvent:
    """One lane (0): read its head and the next seq, hash in Python, insert.  The caller's transaction must
    already serialise appends (SQLite: transaction_mode=IMMEDIATE holds the write lock from BEGIN)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT lane_seq, hash FROM audit_auditevent WHERE lane = 0 ORDER BY lane_seq DESC LIMIT 1"
        )
        head = cursor.fetchone()
        cursor.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_auditevent")
        seq = cursor.fetchone()[0]
    lane_seq, prev_hash = (head[0] + 1, head[1]) if head else (1, chain.genesis_hash(0))
    digest = chain.event_hash((seq, 0, lane_seq, *(values[name] for name in chain.CONTENT), prev_hash))
    event = AuditEvent(seq=seq, lane=0, lane_seq=lane_seq, prev_hash=prev_hash, hash=digest, **values)
    event.save(using=connection.alias)
    return event


def _loaded(event: AuditEvent, alias: str) -> AuditEvent:
    """Mark an instance inserted by raw SQL as stored, so that saving it again is refused."""
    event._state.adding = False
    event._state.db = alias
    return event


def checkpoint_message(*, events: int, seq: int, heads: list, created_at, key_id: str) -> bytes:
    return chain.canonical_json(
        ["gatehouse.audit.checkpoint.v2", events, seq, heads, chain.timestamp(created_at), key_id]
    ).encode()


def _sign_checkpoint(*, heads: list, using: str) -> AuditCheckpoint:
    """Sign ``heads`` (``[[lane, lane_seq, seq, hash], ...]`` ordered by lane) and store the checkpoint."""
    heads = [list(head) for head in sorted(heads)]
    events = sum(head[1] for head in heads)
    seq = max(head[2] for head in heads)
    created_at = timezone.now()
    key_id = signing.current_key_id()
    message = checkpoint_message(events=events, seq=seq, heads=heads, created_at=created_at, key_id=key_id)
    _, signature = signing.sign(message)
    checkpoint = AuditCheckpoint(
        events=events,
        seq=seq,
        heads=chain.canonical_json(heads),
        created_at=created_at,
        key_id=key_id,
        signature=signature,
    )
    checkpoint.save(using=using)
    return checkpoint


def _checkpoint_heads(using: str) -> AuditCheckpoint | None:
    """Sign the heads this transaction sees, unless the newest checkpoint already covers as many events.

    The caller holds the checkpoint lock, so checkpoints are made one at a time, each reading heads after the
    previous one committed: a later checkpoint's heads are never behind an earlier one's in any lane, and
    equal totals mean equal heads.  Appends are not blocked: every head read is a committed event (or this
    transaction's own), which is all a checkpoint claims.
    """
    heads = lane_heads(using=using)
    if not heads:
        return None
    covered = (
        AuditCheckpoint.objects.using(using).order_by("-events").values_list("events", flat=True).first()
    )
    if covered is not None and covered >= sum(head.lane_seq for head in heads):
        return None
    return _sign_checkpoint(heads=[list(head) for head in heads], using=using)


def _lock_checkpoints(using: str) -> None:
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHECKPOINT_LOCK_KEY])


def checkpoint_create(*, using: str = "default") -> AuditCheckpoint | None:
    """Sign the current heads of all lanes; None when the log is empty or nothing was added since the
    newest checkpoint."""
    with transaction.atomic(using=using):
        _lock_checkpoints(using)  # other checkpoints wait; SQLite's IMMEDIATE BEGIN already serialises
        return _checkpoint_heads(using)


def export_record(
    *, actor, organization_id: int | None, export_format: str, filters: Mapping[str, str]
) -> AuditEvent:
    """Record that ``actor`` exported the log of ``organization_id`` (None: every organization) with
    ``filters``, before the export streams."""
    with transaction.atomic():
        return record(
            action=Action.AUDIT_EXPORTED,
            actor=actor,
            organization=organization_id,
            parameters={"format": export_format, "filters": dict(filters)},
        )
