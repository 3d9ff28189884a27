import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import AppendOnlyError, AuditCheckpoint, AuditEvent
from audit.services import checkpoint_create
from tests.audit.helpers import make_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def event():
    return make_events(1)[0]


@pytest.fixture
def checkpoint(event):
    return checkpoint_create()


@pytest.mark.parametrize("model", [AuditEvent, AuditCheckpoint])
def test_orm_refuses_updates_and_deletes(model, event, checkpoint):
    row = model.objects.order_by("-pk").first()
    with pytest.raises(AppendOnlyError):
        row.save()
    with pytest.raises(AppendOnlyError):
        row.delete()
    with pytest.raises(AppendOnlyError):
        model.objects.all().update(seq=999)
    with pytest.raises(AppendOnlyError):
        model.objects.filter(pk=row.pk).delete()
    with pytest.raises(AppendOnlyError):
        model.objects.bulk_update([row], ["seq"])
    with pytest.raises(AppendOnlyError):
        model.objects.update_or_create(pk=row.pk, defaults={"seq": 999})
    assert model.objects.filter(pk=row.pk, seq=row.seq).exists()


def test_instance_returned_by_record_cannot_be_saved_again(event):
    event.action = "grant.revoked"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        checkpoint_create().save()
    assert AuditEvent.objects.get(seq=event.seq).action == "grant.created"


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET action = 'grant.revoked'",
        "DELETE FROM audit_auditevent",
        "UPDATE audit_auditcheckpoint SET seq = seq + 1",
        "DELETE FROM audit_auditcheckpoint",
    ],
)
def test_postgresql_refuses_raw_update_and_delete(sql, event, checkpoint):
    refused = pytest.raises(DatabaseError, match="append-only")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert AuditEvent.objects.filter(seq=event.seq, action="grant.created").exists()
    assert AuditCheckpoint.objects.filter(pk=checkpoint.pk).exists()
