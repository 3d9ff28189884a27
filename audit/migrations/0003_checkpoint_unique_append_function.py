"""One checkpoint per sequence number, and audit_append(): the PostgreSQL append path in one round trip.

audit_append() takes the chain's advisory lock, reads the head with a fresh snapshot (plpgsql statements in
a volatile function each take one under READ COMMITTED), builds the canonical bytes
``[<version>,<seq>,<body>,"<prev_hash>"]`` from the body the application computed, hashes them with SHA-256
and inserts the row.  The application re-checks the returned hash against audit.chain before committing.
"""

from django.db import migrations, models

COLUMNS = (
    "occurred_at, action, result, actor_type, actor_id, actor_label, organization_id, agent_id, agent_label, "
    "on_behalf_of_id, on_behalf_of_label, target_type, target_id, target_label, capabilities, parameters, "
    "request_id, client_ip"
)

FORWARD = f"""
CREATE FUNCTION audit_append(
    p_lock bigint, p_genesis text, p_version text, p_body text,
    p_occurred_at timestamptz, p_action text, p_result text, p_actor_type text, p_actor_id text,
    p_actor_label text, p_organization_id bigint, p_agent_id bigint, p_agent_label text,
    p_on_behalf_of_id bigint, p_on_behalf_of_label text, p_target_type text, p_target_id text,
    p_target_label text, p_capabilities text, p_parameters text, p_request_id text, p_client_ip text,
    OUT o_seq bigint, OUT o_prev_hash text, OUT o_hash text
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT e.seq + 1, e.hash INTO o_seq, o_prev_hash FROM audit_auditevent e ORDER BY e.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        o_seq := 1;
        o_prev_hash := p_genesis;
    END IF;
    o_hash := encode(sha256(convert_to(
        '[' || p_version || ',' || o_seq::text || ',' || p_body || ',"' || o_prev_hash || '"]', 'UTF8'
    )), 'hex');
    INSERT INTO audit_auditevent (seq, {COLUMNS}, prev_hash, hash) VALUES (
        o_seq, p_occurred_at, p_action, p_result, p_actor_type, p_actor_id, p_actor_label,
        p_organization_id, p_agent_id, p_agent_label, p_on_behalf_of_id, p_on_behalf_of_label,
        p_target_type, p_target_id, p_target_label, p_capabilities, p_parameters, p_request_id,
        p_client_ip::inet, o_prev_hash, o_hash
    );
END $$;
"""

BACKWARD = (
    "DROP FUNCTION IF EXISTS audit_append(bigint, text, text, text, timestamptz, text, text, text, text, text, "
    "bigint, bigint, text, bigint, text, text, text, text, text, text, text, text);"
)


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only_trigger")]

    operations = [
        migrations.AlterField(
            model_name="auditcheckpoint",
            name="seq",
            field=models.BigIntegerField(unique=True),
        ),
        migrations.RunPython(forwards, backwards),
    ]
