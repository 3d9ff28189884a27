"""Capability keys: end-of-string anchor \\Z (a trailing newline passed "$").  Trigger rules, second version:
grants keep their identity and cannot be reopened, the ceiling cannot be rewritten in place or emptied by
moving an agent or capability across organizations, and PostgreSQL triggers lock the rows they read.

The constraint change rebuilds governance_capability on SQLite (copy, drop, rename), which fails while
other tables' triggers name that table: so the triggers are dropped first and installed again last.
"""

import importlib

import django.core.validators
from django.db import migrations, models

from governance.migrations._triggers import install, uninstall


def restore_0003(apps, schema_editor):
    uninstall(apps, schema_editor)
    importlib.import_module("governance.migrations.0003_integrity_triggers").forwards(apps, schema_editor)


class Migration(migrations.Migration):

    dependencies = [
        ('governance', '0003_integrity_triggers'),
    ]

    operations = [
        migrations.RunPython(uninstall, restore_0003),
        migrations.RemoveConstraint(
            model_name='capability',
            name='capability_key_shape',
        ),
        migrations.AlterField(
            model_name='capability',
            name='key',
            field=models.CharField(max_length=128, validators=[django.core.validators.RegexValidator('^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+\\Z', 'A capability key is dotted lowercase words, such as records.read_own.')]),
        ),
        migrations.AddConstraint(
            model_name='capability',
            constraint=models.CheckConstraint(condition=models.Q(('key__regex', '^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+\\Z')), name='capability_key_shape'),
        ),
        migrations.RunPython(install, uninstall),
    ]
