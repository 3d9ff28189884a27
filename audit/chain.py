"""The hash chain: canonical content of an event and how its hash is computed.

``hash = SHA-256(canonical)``, where ``canonical`` is a compact JSON array of every stored field in a
fixed order, ending with the previous event's hash.  Changing any field, the order of events, or
removing one breaks the chain at that point.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

GENESIS_HASH = "0" * 64
VERSION = "gatehouse.audit.v1"

# Field order of the canonical form; also the column order verification reads.
FIELDS = (
    "seq",
    "occurred_at",
    "action",
    "result",
    "actor_type",
    "actor_id",
    "actor_label",
    "organization_id",
    "agent_id",
    "agent_label",
    "on_behalf_of_id",
    "on_behalf_of_label",
    "target_type",
    "target_id",
    "target_label",
    "capabilities",
    "parameters",
    "request_id",
    "client_ip",
    "prev_hash",
)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


def canonical_json(value) -> str:
    return _dumps(value)


def timestamp(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite hands back naive UTC values
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(values: tuple) -> str:
    """Hash of one event given its values in :data:`FIELDS` order (``occurred_at`` a datetime)."""
    row = list(values)
    row[1] = timestamp(row[1])
    payload = _dumps([VERSION, *row])
    return hashlib.sha256(payload.encode()).hexdigest()
