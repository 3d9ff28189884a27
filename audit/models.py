"""The append-only audit log.

Rows carry snapshots (labels) instead of foreign keys, so history survives the deletion of what it names,
and no ``ON DELETE`` can ever rewrite a row.  ``seq`` orders events globally (from a database sequence, gaps
allowed); integrity comes from the hash chains, one per lane, each gap-free in ``lane_seq`` (see
:mod:`audit.chain`).  The ORM refuses updates and deletes, and on PostgreSQL so does a trigger.
"""

from __future__ import annotations

import json

from django.db import models

from audit.actions import ActorType, Result


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
    seq = models.BigAutoField(primary_key=True)
    lane = models.PositiveSmallIntegerField(editable=False)
    lane_seq = models.BigIntegerField(editable=False)
    occurred_at = models.DateTimeField()
    # No choices: record() validates against Action, and a new Action value needs no migration.
    action = models.CharField(max_length=64)
    result = models.CharField(max_length=16, choices=Result.choices, default=Result.SUCCESS)

    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=255, blank=True)

    organization_id = models.BigIntegerField(null=True, blank=True)
    agent_id = models.BigIntegerField(null=True, blank=True)
    agent_label = models.CharField(max_length=255, blank=True)
    on_behalf_of_id = models.BigIntegerField(null=True, blank=True)
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
        # The search sorts by (occurred_at, seq) and pages by a range on that pair, so every index the
        # search uses ends in it (docs/audit.md, "Search").  PostgreSQL also has a trigram index on
        # ``parameters`` for free text (migration 0006: it needs the pg_trgm extension).
        indexes = [
            models.Index(fields=["occurred_at", "seq"], name="audit_time"),
            models.Index(fields=["organization_id", "occurred_at", "seq"], name="audit_org_time"),
            models.Index(
                fields=["organization_id", "result", "occurred_at", "seq"], name="audit_org_result_time"
            ),
            models.Index(fields=["agent_id", "occurred_at", "seq"], name="audit_agent_time"),
            models.Index(fields=["on_behalf_of_id", "occurred_at", "seq"], name="audit_on_behalf_of_time"),
            models.Index(fields=["action", "occurred_at"], name="audit_action_time"),
            models.Index(fields=["request_id"], name="audit_request"),
        ]
        constraints = [models.UniqueConstraint(fields=["lane", "lane_seq"], name="audit_lane_position")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.result}"

    @property
    def parameters_dict(self) -> dict:
        return json.loads(self.parameters)


class AuditCheckpoint(AppendOnlyModel):
    """A signed statement: "lane L ends at position N in event #S with hash H", for every lane at once.

    ``heads`` is the canonical JSON list ``[[lane, lane_seq, seq, hash], ...]`` ordered by lane; ``events``
    (the sum of the lanes' positions: how many events the checkpoint covers) and ``seq`` (the newest head's
    global position, for display) follow from it and are signed too.
    """

    id = models.BigAutoField(primary_key=True)
    events = models.BigIntegerField(unique=True)
    seq = models.BigIntegerField()
    heads = models.TextField()
    created_at = models.DateTimeField()
    key_id = models.CharField(max_length=32)
    signature = models.CharField(max_length=128)

    class Meta:
        ordering = ["-events"]

    def __str__(self) -> str:
        return f"checkpoint of {self.events} events (up to #{self.seq})"

    @property
    def heads_list(self) -> list[list]:
        return json.loads(self.heads)
