"""The append-only audit log.

Rows carry snapshots (labels) instead of foreign keys, so history survives the deletion of what it names,
and no ``ON DELETE`` can ever rewrite a row.  Ordering and integrity come from ``seq`` and the hash chain
(see :mod:`audit.chain`); the ORM refuses updates and deletes, and on PostgreSQL so does a trigger.
"""

from __future__ import annotations

import json

from django.db import models

from audit.actions import Action, ActorType, Result


class AppendOnlyError(Exception):
    """An attempt to change or remove an audit row."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("audit rows cannot be updated")

    def delete(self):
        raise AppendOnlyError("audit rows cannot be deleted")

    def bulk_update(self, *args, **kwargs):
        raise AppendOnlyError("audit rows cannot be updated")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows cannot be updated")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows cannot be deleted")


class AuditEvent(AppendOnlyModel):
    seq = models.BigIntegerField(primary_key=True, editable=False)
    occurred_at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=64, choices=Action.choices, db_index=True)
    result = models.CharField(max_length=16, choices=Result.choices, default=Result.SUCCESS)

    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=255, blank=True)

    organization_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    agent_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    agent_label = models.CharField(max_length=255, blank=True)
    on_behalf_of_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    on_behalf_of_label = models.CharField(max_length=255, blank=True)

    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    capabilities = models.TextField(blank=True, help_text="Space-separated capability keys concerned.")
    parameters = models.TextField(default="{}", help_text="Canonical JSON, secrets masked.")

    request_id = models.CharField(max_length=64, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)

    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-seq"]
        indexes = [models.Index(fields=["action", "occurred_at"], name="audit_action_time")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.result}"

    @property
    def parameters_dict(self) -> dict:
        return json.loads(self.parameters)


class AuditCheckpoint(AppendOnlyModel):
    """A signed statement: "the chain up to ``seq`` ends in ``event_hash``"."""

    id = models.BigAutoField(primary_key=True)
    seq = models.BigIntegerField(unique=True)
    event_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    key_id = models.CharField(max_length=32)
    signature = models.CharField(max_length=128)

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"checkpoint at #{self.seq}"
