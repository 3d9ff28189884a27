"""Chain lanes: the log becomes several independent hash chains so that appends no longer queue on one lock.

- ``seq`` becomes an identity column (global order, gaps allowed after rollbacks); ``lane`` and ``lane_seq``
  (gap-free within a lane) are new, and ``(lane, lane_seq)`` is unique.
- Checkpoints sign the heads of every lane (``heads``, ``events``) instead of one head.
- ``action`` loses its choices, so that a new Action value needs no migration.
- audit_append() is replaced by the lane-picking version (see FORWARD).

The canonical form changes (``gatehouse.audit.v2``: ``lane`` and ``lane_seq`` are hashed), so existing
events would have to be rehashed, and old checkpoints re-signed: that is rewriting history, which is what
the log exists to prevent.  Nothing was deployed on the old format, so this migration refuses to run on a
database that already holds audit rows, and says how to start afresh.
"""

from django.db import migrations, models

COLUMNS = (
    "occurred_at, action, result, actor_type, actor_id, actor_label, organization_id, agent_id, agent_label, "
    "on_behalf_of_id, on_behalf_of_label, target_type, target_id, target_label, capabilities, parameters, "
    "request_id, client_ip"
)

OLD_APPEND = (
    "DROP FUNCTION IF EXISTS audit_append(bigint, text, text, text, timestamptz, text, text, text, text, text, "
    "bigint, bigint, text, bigint, text, text, text, text, text, text, text, text);"
)

# Pick a lane: the one this transaction already holds (so that a transaction's events stay in one lane
# and it never waits for a second lane while holding one), else the first lane whose advisory lock is free,
# trying from a per-backend offset; when every lane is busy, wait for the offset's lane.  Then read that
# lane's head with a fresh snapshot (each plpgsql statement of a volatile function takes one under READ
# COMMITTED), draw the global seq, build the canonical bytes
# ``[<version>,<seq>,<lane>,<lane_seq>,<body>,"<prev_hash>"]`` from the body the application computed, hash
# them and insert.  The lane lock is held until the caller's transaction ends.
FORWARD = f"""
CREATE FUNCTION audit_append(
    p_lock_base bigint, p_lanes integer, p_genesis text[], p_version text, p_body text,
    p_occurred_at timestamptz, p_action text, p_result text, p_actor_type text, p_actor_id text,
    p_actor_label text, p_organization_id bigint, p_agent_id bigint, p_agent_label text,
    p_on_behalf_of_id bigint, p_on_behalf_of_label text, p_target_type text, p_target_id text,
    p_target_label text, p_capabilities text, p_parameters text, p_request_id text, p_client_ip text,
    OUT o_seq bigint, OUT o_lane integer, OUT o_lane_seq bigint, OUT o_prev_hash text, OUT o_hash text
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held text := current_setting('gatehouse.audit_lane', true);
    start integer;
    found_free boolean := false;
BEGIN
    IF held IS NOT NULL AND held <> '' THEN
        o_lane := held::integer;
        PERFORM pg_advisory_xact_lock(p_lock_base + o_lane);  -- already ours: returns at once
    ELSE
        start := pg_backend_pid() % p_lanes;
        FOR i IN 0 .. p_lanes - 1 LOOP
            o_lane := (start + i) % p_lanes;
            IF pg_try_advisory_xact_lock(p_lock_base + o_lane) THEN
                found_free := true;
                EXIT;
            END IF;
        END LOOP;
        IF NOT found_free THEN
            o_lane := start;
            PERFORM pg_advisory_xact_lock(p_lock_base + o_lane);
        END IF;
        PERFORM set_config('gatehouse.audit_lane', o_lane::text, true);
    END IF;
    SELECT e.lane_seq + 1, e.hash INTO o_lane_seq, o_prev_hash FROM audit_auditevent e
        WHERE e.lane = o_lane ORDER BY e.lane_seq DESC LIMIT 1;
    IF NOT FOUND THEN
        o_lane_seq := 1;
        o_prev_hash := p_genesis[o_lane + 1];
    END IF;
    o_seq := nextval('{{sequence}}'::regclass);
    o_hash := encode(sha256(convert_to(
        '[' || p_version || ',' || o_seq::text || ',' || o_lane::text || ',' || o_lane_seq::text || ','
        || p_body || ',"' || o_prev_hash || '"]', 'UTF8'
    )), 'hex');
    INSERT INTO audit_auditevent (seq, lane, lane_seq, {COLUMNS}, prev_hash, hash) VALUES (
        o_seq, o_lane, o_lane_seq, p_occurred_at, p_action, p_result, p_actor_type, p_actor_id,
        p_actor_label, p_organization_id, p_agent_id, p_agent_label, p_on_behalf_of_id, p_on_behalf_of_label,
        p_target_type, p_target_id, p_target_label, p_capabilities, p_parameters, p_request_id,
        p_client_ip::inet, o_prev_hash, o_hash
    );
END $$;
"""

BACKWARD = (
    "DROP FUNCTION IF EXISTS audit_append(bigint, integer, text[], text, text, timestamptz, text, text, text, "
    "text, text, bigint, bigint, text, bigint, text, text, text, text, text, text, text, text);"
)

REFUSAL = (
    "Migration audit/0005 changes the audit chain's format (chain lanes, gatehouse.audit.v2) and will not "
    "rehash the {events} audit event(s) and {checkpoints} checkpoint(s) already in this database: that "
    "would rewrite their history.  Nothing was deployed on the old format, so start from an empty audit "
    "log: recreate the database (for the SQLite development database, delete the db.sqlite3 file under "
    "GATEHOUSE_VAR_DIR; for PostgreSQL, drop and create the database) and run migrate again."
)


def refuse_existing_rows(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM audit_auditevent")
        events = cursor.fetchone()[0]
        cursor.execute("SELECT COUNT(*) FROM audit_auditcheckpoint")
        checkpoints = cursor.fetchone()[0]
    if events or checkpoints:
        raise RuntimeError(REFUSAL.format(events=events, checkpoints=checkpoints))


def drop_old_append(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(OLD_APPEND, params=None)


def create_append(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # Name seq's identity sequence once, here, rather than looking it up on every append.
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SELECT pg_get_serial_sequence('audit_auditevent', 'seq')")
            sequence = cursor.fetchone()[0]
        schema_editor.execute(FORWARD.replace("{sequence}", sequence), params=None)


def drop_append(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_mfa_actions")]

    operations = [
        migrations.RunPython(refuse_existing_rows, refuse_existing_rows),
        migrations.RunPython(drop_old_append, migrations.RunPython.noop),
        migrations.AlterModelOptions(name="auditcheckpoint", options={"ordering": ["-events"]}),
        migrations.RemoveField(model_name="auditcheckpoint", name="event_hash"),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="events",
            field=models.BigIntegerField(default=0, unique=True),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="heads",
            field=models.TextField(default="[]"),
            preserve_default=False,
        ),
        migrations.AlterField(model_name="auditcheckpoint", name="seq", field=models.BigIntegerField()),
        migrations.AddField(
            model_name="auditevent",
            name="lane",
            field=models.PositiveSmallIntegerField(default=0, editable=False),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditevent",
            name="lane_seq",
            field=models.BigIntegerField(default=0, editable=False),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="auditevent", name="action", field=models.CharField(db_index=True, max_length=64)
        ),
        migrations.AlterField(
            model_name="auditevent", name="seq", field=models.BigAutoField(primary_key=True, serialize=False)
        ),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.UniqueConstraint(fields=("lane", "lane_seq"), name="audit_lane_position"),
        ),
        migrations.RunPython(create_append, drop_append),
    ]
