"""The hash chain: canonical content of an event and how its hash is computed.

``hash = SHA-256(canonical)``, where ``canonical`` is a compact JSON array (UTF-8) of the version tag and
every stored field in :data:`FIELDS` order, ending with the previous event's hash::

    ["gatehouse.audit.v1", seq, "2026-01-02T03:04:05.000006Z", "grant.created", ..., "<prev_hash>"]

Changing any field, the order of events, or removing one breaks the chain at that point.  The append path
on PostgreSQL builds the same bytes in the database (see :func:`content_body`); the stored hash is always
re-checked against :func:`event_hash` before the row commits.
"""

from __future__ import annotations

import hashlib
import ipaddress
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
VERSION_JSON = _dumps(VERSION)


def canonical_json(value) -> str:
    return _dumps(value)


def timestamp(value: datetime | str) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC; a string is taken as already in that form."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:  # SQLite hands back naive UTC values
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_ip(value: str | None) -> str | None:
    """One spelling per address, identical whatever the database prints.

    IPv4-mapped IPv6 addresses become plain IPv4 and zone ids are dropped (PostgreSQL's ``inet`` has none).
    PostgreSQL prints some IPv6 addresses in mixed notation (``::1.2.3.4``), so verification passes what it
    reads through this function too.
    """
    if value is None or value == "":
        return None
    address = ipaddress.ip_address(value.split("%", 1)[0].strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def content_body(values: tuple) -> str:
    """The canonical text of the fields between ``seq`` and ``prev_hash`` (``occurred_at`` … ``client_ip``),
    without the surrounding brackets, so that ``[VERSION, seq, <body>, prev_hash]`` is the canonical form."""
    row = list(values)
    row[0] = timestamp(row[0])
    return _dumps(row)[1:-1]


def event_hash(values: tuple) -> str:
    """Hash of one event given its values in :data:`FIELDS` order (``occurred_at`` a datetime or the
    canonical timestamp string)."""
    row = list(values)
    row[1] = timestamp(row[1])
    payload = _dumps([VERSION, *row])
    return hashlib.sha256(payload.encode()).hexdigest()
