"""The cross-table rules of the governance tables, as database triggers on SQLite and PostgreSQL.

Not a migration itself (the loader skips modules starting with "_"): migrations call :func:`install`.

Why triggers: these rules span tables (a grant, its agent, the agent's ceiling, the capability's tool
server, the user), so no CHECK constraint can hold them, and a rule kept only in Python is skipped by
``QuerySet.update()``, raw SQL, the shell or a bug.  The services check the same rules first to give a
plain message; the triggers are the backstop.

On PostgreSQL each trigger first takes ``FOR SHARE`` locks on the rows its rule reads.  Under READ
COMMITTED two transactions could otherwise each pass their check and together commit a forbidden state
(one removes a ceiling entry while the other grants it).  With the locks the second waits for the first
and then re-reads committed data (each statement of a PL/pgSQL function takes a fresh snapshot).
SQLite serialises writers (transaction_mode=IMMEDIATE), so it needs no locks.

Warning for later migrations: on SQLite, Django rebuilds a table (copy, drop, rename) for many schema
changes (adding a NOT NULL column, changing a constraint).  The rename fails while another table's trigger
names the table ("error in trigger gh_...: no such table"), and the drop removes the table's own triggers.
``migrate`` therefore drops the triggers before it runs and reinstalls them after it (SQLite only, see
:func:`before_migrate`); a migration run some other way should begin with ``RunPython(uninstall, install)``
and end with ``RunPython(install, uninstall)``, as 0004 does.  tests/governance/test_constraints.py fails
when a trigger is missing.
"""

from __future__ import annotations

from django.db import connections
from django.db.migrations.recorder import MigrationRecorder

# Each rule: (condition on NEW / OLD, message).  Messages name the rule and never a value.
GRANT_ORG = """
    (SELECT organization_id FROM governance_agent WHERE id = NEW.agent_id) <> NEW.organization_id
    OR (SELECT ts.organization_id FROM governance_capability c
        JOIN governance_toolserver ts ON ts.id = c.tool_server_id WHERE c.id = NEW.capability_id)
       <> NEW.organization_id
    OR (NEW.user_id IS NOT NULL
        AND COALESCE((SELECT organization_id FROM governance_user WHERE id = NEW.user_id), -1)
            <> NEW.organization_id)
"""
GRANT_CEILING = """
    NEW.revoked_at IS NULL AND NOT EXISTS (
        SELECT 1 FROM governance_agent_ceiling
        WHERE agent_id = NEW.agent_id AND capability_id = NEW.capability_id)
"""
GRANT_BACKGROUND_USER = """
    NEW.user_id IS NOT NULL AND (SELECT kind FROM governance_agent WHERE id = NEW.agent_id) = 'background'
"""
GRANT_INTERACTIVE_NO_USER = """
    NEW.user_id IS NULL AND (SELECT kind FROM governance_agent WHERE id = NEW.agent_id) = 'interactive'
"""
GRANT_IDENTITY_CHANGED = """
    NEW.agent_id <> OLD.agent_id OR NEW.capability_id <> OLD.capability_id
    OR NEW.organization_id <> OLD.organization_id
    OR COALESCE(NEW.user_id, -1) <> COALESCE(OLD.user_id, -1)
"""
GRANT_REOPENED = """
    OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NULL
"""
AGENT_CHANGES_UNDER_GRANTS = """
    (NEW.kind <> OLD.kind OR NEW.organization_id <> OLD.organization_id)
    AND EXISTS (SELECT 1 FROM governance_grant WHERE agent_id = NEW.id)
"""
AGENT_MOVES_WITH_CEILING = """
    NEW.organization_id <> OLD.organization_id
    AND EXISTS (SELECT 1 FROM governance_agent_ceiling WHERE agent_id = NEW.id)
"""
USER_CHANGES_UNDER_GRANTS = """
    COALESCE(NEW.organization_id, -1) <> COALESCE(OLD.organization_id, -1)
    AND EXISTS (SELECT 1 FROM governance_grant WHERE user_id = NEW.id AND revoked_at IS NULL)
"""
CAPABILITY_MOVES_UNDER_GRANTS = """
    NEW.tool_server_id <> OLD.tool_server_id
    AND EXISTS (SELECT 1 FROM governance_grant WHERE capability_id = NEW.id)
"""
CAPABILITY_LEAVES_CEILING_ORG = """
    NEW.tool_server_id <> OLD.tool_server_id
    AND EXISTS (SELECT 1 FROM governance_agent_ceiling ac JOIN governance_agent a ON a.id = ac.agent_id
                WHERE ac.capability_id = NEW.id
                  AND a.organization_id <> (SELECT organization_id FROM governance_toolserver
                                            WHERE id = NEW.tool_server_id))
"""
TOOL_SERVER_MOVES = """
    NEW.organization_id <> OLD.organization_id
    AND EXISTS (SELECT 1 FROM governance_capability WHERE tool_server_id = NEW.id)
"""
CEILING_ACROSS_ORGS = """
    (SELECT organization_id FROM governance_agent WHERE id = NEW.agent_id) <>
    (SELECT ts.organization_id FROM governance_capability c
     JOIN governance_toolserver ts ON ts.id = c.tool_server_id WHERE c.id = NEW.capability_id)
"""
CEILING_REMOVED_UNDER_GRANT = """
    EXISTS (SELECT 1 FROM governance_grant
            WHERE agent_id = OLD.agent_id AND capability_id = OLD.capability_id AND revoked_at IS NULL)
"""
CEILING_CHANGED_UNDER_GRANT = """
    (NEW.agent_id <> OLD.agent_id OR NEW.capability_id <> OLD.capability_id)
    AND EXISTS (SELECT 1 FROM governance_grant
                WHERE agent_id = OLD.agent_id AND capability_id = OLD.capability_id AND revoked_at IS NULL)
"""

GRANT_RULES = [
    (GRANT_ORG, "grant crosses organizations"),
    (GRANT_CEILING, "grant outside the agent's ceiling"),
    (GRANT_BACKGROUND_USER, "a background agent's grant cannot name a user"),
    (GRANT_INTERACTIVE_NO_USER, "an interactive agent's grant must name a user"),
]

# PostgreSQL row locks taken before the checks (see the module docstring).
LOCK_GRANT_PARENTS = """
    PERFORM 1 FROM governance_agent WHERE id = NEW.agent_id FOR SHARE;
    PERFORM 1 FROM governance_capability WHERE id = NEW.capability_id FOR SHARE;
    PERFORM 1 FROM governance_user WHERE id = NEW.user_id FOR SHARE;
    PERFORM 1 FROM governance_agent_ceiling
        WHERE agent_id = NEW.agent_id AND capability_id = NEW.capability_id FOR SHARE;
"""
LOCK_CEILING_PARENTS = """
    PERFORM 1 FROM governance_agent WHERE id = NEW.agent_id FOR SHARE;
    PERFORM 1 FROM governance_capability WHERE id = NEW.capability_id FOR SHARE;
"""

# (name, table, timing and event, PostgreSQL lock preamble, rules)
TRIGGERS = [
    ("gh_grant_insert", "governance_grant", "BEFORE INSERT", LOCK_GRANT_PARENTS, GRANT_RULES),
    ("gh_grant_update", "governance_grant", "BEFORE UPDATE", LOCK_GRANT_PARENTS, [
        (GRANT_IDENTITY_CHANGED, "a grant's organization, user, agent and capability never change"),
        (GRANT_REOPENED, "a revoked grant cannot be reopened; create a new grant"),
        *GRANT_RULES,
    ]),
    ("gh_agent_update", "governance_agent", "BEFORE UPDATE", "", [
        (AGENT_CHANGES_UNDER_GRANTS, "an agent with grants cannot change kind or organization"),
        (AGENT_MOVES_WITH_CEILING, "empty the agent's ceiling before moving it to another organization"),
    ]),
    ("gh_user_update", "governance_user", "BEFORE UPDATE", "",
     [(USER_CHANGES_UNDER_GRANTS, "a user with open grants cannot change organization")]),
    ("gh_capability_update", "governance_capability", "BEFORE UPDATE", "", [
        (CAPABILITY_MOVES_UNDER_GRANTS, "a granted capability cannot move to another tool server"),
        (CAPABILITY_LEAVES_CEILING_ORG,
         "a capability in an agent's ceiling cannot move to another organization"),
    ]),
    ("gh_toolserver_update", "governance_toolserver", "BEFORE UPDATE", "",
     [(TOOL_SERVER_MOVES, "a tool server with capabilities cannot change organization")]),
    ("gh_ceiling_insert", "governance_agent_ceiling", "BEFORE INSERT", LOCK_CEILING_PARENTS,
     [(CEILING_ACROSS_ORGS, "an agent's ceiling cannot hold another organization's capability")]),
    ("gh_ceiling_update", "governance_agent_ceiling", "BEFORE UPDATE", LOCK_CEILING_PARENTS, [
        (CEILING_CHANGED_UNDER_GRANT, "revoke the open grants before removing a capability from the ceiling"),
        (CEILING_ACROSS_ORGS, "an agent's ceiling cannot hold another organization's capability"),
    ]),
    ("gh_ceiling_delete", "governance_agent_ceiling", "BEFORE DELETE", "",
     [(CEILING_REMOVED_UNDER_GRANT, "revoke the open grants before removing a capability from the ceiling")]),
]

NAMES = [(name, table) for name, table, *_ in TRIGGERS]


def _quote(message: str) -> str:
    return message.replace("'", "''")


def sqlite_sql(name: str, table: str, when: str, locks: str, rules: list) -> str:
    body = "".join(
        f"SELECT RAISE(ABORT, '{_quote(message)}') WHERE {condition};\n" for condition, message in rules
    )
    return f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW BEGIN\n{body}END;"


def postgres_sql(name: str, table: str, when: str, locks: str, rules: list) -> str:
    checks = "".join(
        f"IF {condition} THEN RAISE EXCEPTION '{_quote(message)}'"
        f" USING ERRCODE = 'check_violation'; END IF;\n"
        for condition, message in rules
    )
    row = "OLD" if "DELETE" in when else "NEW"
    return (
        f"CREATE OR REPLACE FUNCTION {name}_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN\n"
        f"{locks}{checks}RETURN {row}; END $$;\n"
        f"DROP TRIGGER IF EXISTS {name} ON {table};\n"
        f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}_fn();"
    )


def drop_sql(vendor: str, name: str, table: str) -> str:
    if vendor == "postgresql":
        return f"DROP TRIGGER IF EXISTS {name} ON {table}; DROP FUNCTION IF EXISTS {name}_fn();"
    return f"DROP TRIGGER IF EXISTS {name};"


def _install(vendor: str, execute) -> None:
    for name, table, when, locks, rules in TRIGGERS:
        if vendor != "postgresql":
            execute(drop_sql(vendor, name, table))
        make = postgres_sql if vendor == "postgresql" else sqlite_sql
        execute(make(name, table, when, locks, rules))


def _uninstall(vendor: str, execute) -> None:
    for name, table in NAMES:
        execute(drop_sql(vendor, name, table))


def install(apps, schema_editor) -> None:
    """(Re)create every trigger with the current definitions; safe to run again."""
    connection = schema_editor.connection
    if connection.vendor == "sqlite" and connection.alias in _deferred:
        return  # ``migrate`` is running: after_migrate installs them once every table is in its final shape
    _install(schema_editor.connection.vendor, lambda sql: schema_editor.execute(sql, params=None))


def uninstall(apps, schema_editor) -> None:
    _uninstall(schema_editor.connection.vendor, lambda sql: schema_editor.execute(sql, params=None))


# SQLite only: ``migrate`` drops the triggers before it runs and installs them again afterwards, so that a
# later migration rebuilding a governance table (any NOT NULL AddField does) neither fails nor loses them.
# Connected in governance/apps.py.  PostgreSQL alters tables in place and keeps its triggers.
TRIGGERS_MIGRATION = ("governance", "0004_capability_key_end_of_string_and_trigger_rules")
_deferred: set[str] = set()


def before_migrate(sender, using: str = "default", **kwargs) -> None:
    connection = connections[using]
    if connection.vendor == "sqlite":
        _deferred.add(using)
        with connection.cursor() as cursor:
            _uninstall(connection.vendor, cursor.execute)


def after_migrate(sender, using: str = "default", **kwargs) -> None:
    connection = connections[using]
    _deferred.discard(using)
    if connection.vendor != "sqlite":
        return
    if TRIGGERS_MIGRATION not in MigrationRecorder(connection).applied_migrations():
        return  # migrated back to before the triggers (or not migrated at all)
    with connection.cursor() as cursor:
        _install(connection.vendor, cursor.execute)


def installed(connection) -> set[str]:
    """Names of the gh_* triggers present in the database (used by the tests)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {row[0] for row in cursor.fetchall()} & {name for name, _ in NAMES}
