"""CSV and JSON Lines exports of a search, streamed with flat memory.

Rows come from a server-side cursor on PostgreSQL (inside a transaction, so the cursor is not
materialised as a ``WITH HOLD`` cursor would be) and a chunked cursor on SQLite, ``CHUNK`` rows at a time;
each chunk is encoded and handed to the response before the next is read.

CSV cells that a spreadsheet would run as a formula (starting with ``= + - @``, a tab or a carriage
return) are prefixed with an apostrophe; every cell is quoted by :mod:`csv` as needed.  JSON Lines is one
JSON object per line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import nullcontext, suppress

from django.db import connections, transaction

from audit import chain

CHUNK = 2_000

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
    "lane",
    "lane_seq",
    "prev_hash",
    "hash",
)
_OCCURRED_AT = FIELDS.index("occurred_at")
_PARAMETERS = FIELDS.index("parameters")

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_FIRST = frozenset(FORMULA_START)  # csv_cell, inlined for the export's inner loop (None → "")


def csv_cell(value) -> str:
    """A value as CSV cell text that no spreadsheet runs as a formula."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def rows(queryset) -> Iterator[tuple]:
    """The events of ``queryset`` (in its order) as tuples of :data:`FIELDS`, streamed."""
    connection = connections[queryset.db]
    streaming = transaction.atomic(using=queryset.db) if connection.vendor == "postgresql" else nullcontext()
    with streaming:
        for row in queryset.values_list(*FIELDS).iterator(chunk_size=CHUNK):
            row = list(row)
            row[_OCCURRED_AT] = chain.timestamp(row[_OCCURRED_AT])
            yield row


def _batches(queryset) -> Iterator[list]:
    batch = []
    for row in rows(queryset):
        batch.append(row)
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def csv_lines(queryset) -> Iterator[str]:
    """A header line, then the events as CSV, a chunk of rows per string."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(FIELDS)
    yield buffer.getvalue()
    for batch in _batches(queryset):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(
            [
                ("'" + value if value[:1] in _FORMULA_FIRST else value) if type(value) is str else value
                for value in row
            ]
            for row in batch
        )
        yield buffer.getvalue()


def jsonl_lines(queryset) -> Iterator[str]:
    """The events as JSON Lines, a chunk of rows per string; ``parameters`` as a JSON object."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for batch in _batches(queryset):
        lines = []
        for row in batch:
            with suppress(ValueError):  # not JSON (a tampered row): exported as the text it is
                row[_PARAMETERS] = json.loads(row[_PARAMETERS])
            lines.append(dumps(dict(zip(FIELDS, row, strict=True))))
        yield "\n".join(lines) + "\n"
