"""Database cursors shared by the hot paths (the token endpoint, the decision API, the audit append)."""

from __future__ import annotations

from django.db.backends.postgresql.base import ServerBindingCursor


def prepared_cursor(connection):
    """A cursor whose statements PostgreSQL parses and plans once per connection (prepared statements).

    Django binds parameters client-side and never prepares; planning a join on every request costs
    PostgreSQL more than running it.  This cursor binds server-side, so PostgreSQL keeps each statement's
    plan while the connection lives (``DATABASE_PREPARED_STATEMENTS``, on by default: see
    ``config/env.py``).  Wrapped like any Django cursor (errors, query logging).  Elsewhere, or with
    preparation off, a plain cursor.
    """
    if (
        connection.vendor != "postgresql"
        or connection.settings_dict["OPTIONS"].get("prepare_threshold") is None
    ):
        return connection.cursor()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = ServerBindingCursor(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(cursor)
    return connection.make_cursor(cursor)
