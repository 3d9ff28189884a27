"""Database triggers for the rules no CHECK constraint can express, on SQLite and PostgreSQL alike.

A grant never crosses organizations, never leaves its agent's ceiling, names a user exactly when its agent
is interactive; and the rows a grant depends on cannot later change under it.
"""

from django.db import migrations

# (name, table, timing/event, condition, message); the condition refers to NEW / OLD.
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
AGENT_CHANGES_UNDER_GRANTS = """
    (NEW.kind <> OLD.kind OR NEW.organization_id <> OLD.organization_id)
    AND EXISTS (SELECT 1 FROM governance_grant WHERE agent_id = NEW.id)
"""
USER_CHANGES_UNDER_GRANTS = """
    COALESCE(NEW.organization_id, -1) <> COALESCE(OLD.organization_id, -1)
    AND EXISTS (SELECT 1 FROM governance_grant WHERE user_id = NEW.id AND revoked_at IS NULL)
"""
CAPABILITY_MOVES_UNDER_GRANTS = """
    NEW.tool_server_id <> OLD.tool_server_id
    AND EXISTS (SELECT 1 FROM governance_grant WHERE capability_id = NEW.id)
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

GRANT_RULES = [
    (GRANT_ORG, "grant crosses organizations"),
    (GRANT_CEILING, "grant outside the agent's ceiling"),
    (GRANT_BACKGROUND_USER, "a background agent's grant cannot name a user"),
    (GRANT_INTERACTIVE_NO_USER, "an interactive agent's grant must name a user"),
]

TRIGGERS = [
    ("gh_grant_insert", "governance_grant", "BEFORE INSERT", GRANT_RULES),
    ("gh_grant_update", "governance_grant", "BEFORE UPDATE", GRANT_RULES),
    ("gh_agent_update", "governance_agent", "BEFORE UPDATE",
     [(AGENT_CHANGES_UNDER_GRANTS, "an agent with grants cannot change kind or organization")]),
    ("gh_user_update", "governance_user", "BEFORE UPDATE",
     [(USER_CHANGES_UNDER_GRANTS, "a user with open grants cannot change organization")]),
    ("gh_capability_update", "governance_capability", "BEFORE UPDATE",
     [(CAPABILITY_MOVES_UNDER_GRANTS, "a granted capability cannot move to another tool server")]),
    ("gh_toolserver_update", "governance_toolserver", "BEFORE UPDATE",
     [(TOOL_SERVER_MOVES, "a tool server with capabilities cannot change organization")]),
    ("gh_ceiling_insert", "governance_agent_ceiling", "BEFORE INSERT",
     [(CEILING_ACROSS_ORGS, "an agent's ceiling cannot hold another organization's capability")]),
    ("gh_ceiling_delete", "governance_agent_ceiling", "BEFORE DELETE",
     [(CEILING_REMOVED_UNDER_GRANT, "revoke the open grants before removing a capability from the ceiling")]),
]


def _sqlite(name, table, when, rules):
    body = "".join(
        f"SELECT RAISE(ABORT, '{message.replace(chr(39), chr(39) * 2)}') WHERE {condition};\n"
        for condition, message in rules
    )
    return f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW BEGIN\n{body}END;"


def _postgres(name, table, when, rules):
    checks = "".join(
        f"IF {condition} THEN RAISE EXCEPTION '{message.replace(chr(39), chr(39) * 2)}' "
        f"USING ERRCODE = 'check_violation'; END IF;\n"
        for condition, message in rules
    )
    row = "OLD" if "DELETE" in when else "NEW"
    return (
        f"CREATE FUNCTION {name}_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN\n{checks}"
        f"RETURN {row}; END $$;\n"
        f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}_fn();"
    )


def forwards(apps, schema_editor):
    make = _postgres if schema_editor.connection.vendor == "postgresql" else _sqlite
    for trigger in TRIGGERS:
        schema_editor.execute(make(*trigger), params=None)


def backwards(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    for name, table, _, _ in TRIGGERS:
        if postgres:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}; DROP FUNCTION IF EXISTS {name}_fn();")
        else:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name};")


class Migration(migrations.Migration):
    dependencies = [("governance", "0002_oauth_applications")]
    operations = [migrations.RunPython(forwards, backwards)]
