"""The hash chains: canonical content of an event and how its hash is computed.

The log is made of independent chains called *lanes* (see docs/audit.md).  Each event belongs to one lane,
has a gap-free position ``lane_seq`` in it (1, 2, 3, …), and links to the previous event of the same lane.
``hash = SHA-256(canonical)``, where ``canonical`` is a compact JSON array (UTF-8) of the version tag and
every stored field in :data:`FIELDS` order, ending with the previous event's hash::

    ["gatehouse.audit.v2", seq, lane, lane_seq, "2026-01-02T03:04:05.000006Z", "grant.created", ..., "<prev>"]

``seq`` is the global position (from a database sequence: increasing, gaps allowed) and is hashed too, so
the display order cannot be rewritten either.  Changing any field, the order of a lane, or removing an
event breaks its lane at that point.  The append path on PostgreSQL builds the same bytes in the database
(see :func:`content_body`); the stored hash is always re-checked against :func:`event_hash` before the row
commits.

This module imports nothing from Django: verification worker processes use it without setting Django up.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import UTC, datetime

VERSION = "gatehouse.audit.v2"

#: Upper bound of ``AUDIT_CHAIN_LANES`` (lanes are numbered 0 … MAX_LANES - 1).
MAX_LANES = 64

# Field order of the canonical form; also the column order verification reads.
FIELDS = (
    "seq",
    "lane",
    "lane_seq",
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

#: The content fields (``occurred_at`` … ``client_ip``): what the application computes before appending.
CONTENT = FIELDS[3:-1]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
VERSION_JSON = _dumps(VERSION)


def genesis_hash(lane: int) -> str:
    """What the first event of ``lane`` links to: fixed, and different for every lane, so that a lane's
    first event cannot be moved to another lane."""
    return hashlib.sha256(f"{VERSION} genesis lane {lane}".encode()).hexdigest()


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
    """The canonical text of the :data:`CONTENT` fields without the surrounding brackets, so that
    ``[<version>,<seq>,<lane>,<lane_seq>,<body>,"<prev_hash>"]`` is the canonical form."""
    row = list(values)
    row[0] = timestamp(row[0])
    return _dumps(row)[1:-1]


def event_hash(values: tuple) -> str:
    """Hash of one event given its values in :data:`FIELDS` order (``occurred_at`` a datetime or the
    canonical timestamp string)."""
    row = list(values)
    row[3] = timestamp(row[3])
    payload = _dumps([VERSION, *row])
    return hashlib.sha256(payload.encode()).hexdigest()
