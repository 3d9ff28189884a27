"""The approvals tables' cross-row rules, as database triggers (the backstop behind approvals.services).

Built with the governance helpers (same SQL shapes on SQLite and PostgreSQL); they only read approvals
tables, so a governance migration rebuilding a table on SQLite never trips over them.  The services check
each rule first for a plain sentence; tests/approvals/test_constraints.py writes each forbidden state
directly and expects the database to refuse it.
"""

from __future__ import annotations

from governance.migrations._triggers import drop_sql, postgres_sql, sqlite_sql

REQUEST = "approvals_actionrequest"
DECISION = "approvals_approvaldecision"

IDENTITY_CHANGED = """
    NEW.organization_id <> OLD.organization_id OR NEW.agent_id <> OLD.agent_id
    OR NEW.capability_id <> OLD.capability_id OR NEW.kind <> OLD.kind
    OR COALESCE(NEW.on_behalf_of_id, -1) <> COALESCE(OLD.on_behalf_of_id, -1)
    OR COALESCE(NEW.requested_by_id, -1) <> COALESCE(OLD.requested_by_id, -1)
    OR NEW.approvals_required <> OLD.approvals_required
    OR NEW.binding_message <> OLD.binding_message
"""
# pending -> approved / denied / expired / cancelled; approved -> used / expired; nothing leaves the rest.
STATUS_BACKWARDS = """
    NEW.status <> OLD.status AND NOT (
        OLD.status = 'pending' OR (OLD.status = 'approved' AND NEW.status IN ('used', 'expired')))
"""
APPROVED_WITHOUT_DECISIONS = """
    NEW.status = 'approved' AND OLD.status <> 'approved'
    AND (SELECT COUNT(*) FROM approvals_approvaldecision
         WHERE request_id = NEW.id AND decision = 'approve') < NEW.approvals_required
"""
DECISION_NOT_PENDING = """
    (SELECT status FROM approvals_actionrequest WHERE id = NEW.request_id) <> 'pending'
"""
DECISION_BY_REQUESTER = """
    NEW.approver_id = COALESCE((SELECT requested_by_id FROM approvals_actionrequest WHERE id = NEW.request_id), -1)
"""
ALWAYS = "1 = 1"

LOCK_REQUEST = "PERFORM 1 FROM approvals_actionrequest WHERE id = NEW.request_id FOR SHARE;\n"

TRIGGERS = [
    ("gh_actionrequest_update", REQUEST, "BEFORE UPDATE", "", [
        (IDENTITY_CHANGED, "an action request's identity never changes"),
        (STATUS_BACKWARDS, "an action request's status only moves forward"),
        (APPROVED_WITHOUT_DECISIONS, "an action request is approved only with enough approvals"),
    ]),
    ("gh_approvaldecision_insert", DECISION, "BEFORE INSERT", LOCK_REQUEST, [
        (DECISION_NOT_PENDING, "only a pending action request takes decisions"),
        (DECISION_BY_REQUESTER, "nobody decides their own request"),
    ]),
    ("gh_approvaldecision_update", DECISION, "BEFORE UPDATE", "",
     [(ALWAYS, "an approval decision is final")]),
    ("gh_approvaldecision_delete", DECISION, "BEFORE DELETE", "",
     [(ALWAYS, "an approval decision is final")]),
]
NAMES = [(name, table) for name, table, *_ in TRIGGERS]


def install(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    for name, table, when, locks, rules in TRIGGERS:
        if vendor != "postgresql":
            schema_editor.execute(drop_sql(vendor, name, table), params=None)
        make = postgres_sql if vendor == "postgresql" else sqlite_sql
        schema_editor.execute(make(name, table, when, locks, rules), params=None)


def uninstall(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    for name, table in NAMES:
        schema_editor.execute(drop_sql(vendor, name, table), params=None)


def installed(connection) -> set[str]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {row[0] for row in cursor.fetchall()} & {name for name, _ in NAMES}
