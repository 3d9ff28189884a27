"""Indexes for the audit search (docs/audit.md, "Search").

- The search sorts by ``(occurred_at, seq)`` and pages by a range on that pair, so its indexes end in it:
  by time alone, by organization, by organization and result, by agent, by on-behalf-of user.  These
  replace the single-column indexes on ``occurred_at``, ``organization_id``, ``agent_id`` and
  ``on_behalf_of_id``, and the single ``action`` index with its ``varchar_pattern_ops`` twin (PostgreSQL's
  ``_like`` index): ``(action, occurred_at)`` serves every action lookup, and nothing searches actions by
  pattern.  The unique ``hash`` loses its ``_like`` twin too (its unique index stays).  Fewer indexes keep
  the append as cheap as before.  The request id gets an index for "the request's other events".
- On PostgreSQL, free text over ``parameters`` is served by a trigram GIN index (``pg_trgm``).  pg_trgm is a
  trusted extension: a role with CREATE on the database may create it.  When it cannot be created, the
  migration goes on without the index and free-text search scans in time order instead (slower, same
  answers).

Only indexes change: no audit row is rewritten, so the append-only triggers (migration 0002) are not
involved.  On SQLite, Django rebuilds the table to change a column's index (copying the rows into a new
table); SQLite has no append-only triggers.  Building the indexes locks appends on PostgreSQL for the time
it takes (about a minute per million events on a small machine); plan it in a quiet window.
"""

import logging

from django.db import DatabaseError, migrations, models, transaction

log = logging.getLogger(__name__)

TRIGRAM_INDEX = "audit_parameters_trgm"


def create_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):  # a savepoint: failure is not fatal
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm", params=None)
    except DatabaseError as error:
        log.warning("pg_trgm is not available (%s): free-text audit search will scan instead", error)
        return
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {TRIGRAM_INDEX} ON audit_auditevent USING gin (parameters gin_trgm_ops)",
        params=None,
    )


HASH_LIKE_INDEX = "audit_auditevent_hash_d0c402da_like"  # Django's name for it (the table, column and suffix)
SINGLE_INDEXED = ["occurred_at", "action", "organization_id", "agent_id", "on_behalf_of_id"]


def drop_single_indexes(apps, schema_editor):
    """Drop every plain index on exactly one of SINGLE_INDEXED (with PostgreSQL's ``_like`` twin)."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "audit_auditevent")
    for name, info in sorted(constraints.items()):
        if info["index"] and not info["unique"] and not info["primary_key"]:
            if len(info["columns"]) == 1 and info["columns"][0] in SINGLE_INDEXED:
                schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}", params=None)
    if connection.vendor == "postgresql":
        # The unique ``hash`` keeps its unique index; its ``_like`` twin serves pattern searches nobody runs.
        schema_editor.execute(f"DROP INDEX IF EXISTS {HASH_LIKE_INDEX}", params=None)


def create_single_indexes(apps, schema_editor):
    model = apps.get_model("audit", "AuditEvent")
    for name in SINGLE_INDEXED:
        field = model._meta.get_field(name).clone()
        field.db_index = True
        field.set_attributes_from_name(name)
        field.model = model
        for statement in schema_editor._field_indexes_sql(model, field):
            schema_editor.execute(statement, params=None)
    if schema_editor.connection.vendor == "postgresql":
        hash_field = model._meta.get_field("hash")
        schema_editor.execute(schema_editor._create_like_index_sql(model, hash_field), params=None)


def drop_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {TRIGRAM_INDEX}", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0005_lanes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # Only the single-column indexes go: dropped by name, not by Django's ALTER, which on SQLite would
            # rebuild the whole table once per field.
            database_operations=[migrations.RunPython(drop_single_indexes, create_single_indexes)],
            state_operations=[
                migrations.AlterField(
                    model_name="auditevent",
                    name="action",
                    field=models.CharField(max_length=64),
                ),
                migrations.AlterField(
                    model_name="auditevent",
                    name="agent_id",
                    field=models.BigIntegerField(blank=True, null=True),
                ),
                migrations.AlterField(
                    model_name="auditevent",
                    name="occurred_at",
                    field=models.DateTimeField(),
                ),
                migrations.AlterField(
                    model_name="auditevent",
                    name="on_behalf_of_id",
                    field=models.BigIntegerField(blank=True, null=True),
                ),
                migrations.AlterField(
                    model_name="auditevent",
                    name="organization_id",
                    field=models.BigIntegerField(blank=True, null=True),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["occurred_at", "seq"], name="audit_time"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["organization_id", "occurred_at", "seq"], name="audit_org_time"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                fields=["organization_id", "result", "occurred_at", "seq"], name="audit_org_result_time"
            ),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["agent_id", "occurred_at", "seq"], name="audit_agent_time"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                fields=["on_behalf_of_id", "occurred_at", "seq"], name="audit_on_behalf_of_time"
            ),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["request_id"], name="audit_request"),
        ),
        migrations.RunPython(create_trigram_index, drop_trigram_index),
    ]
