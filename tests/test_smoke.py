from audit.models import AuditEvent
from governance import services


def test_grant_create_records_one_event(admin, agent, capability, member):
    before = AuditEvent.objects.count()
    grant = services.grant_create(actor=admin, agent=agent, capability=capability, user=member, reason="care")
    events = list(AuditEvent.objects.filter(seq__gt=before))
    assert [e.action for e in events] == ["grant.created"]
    assert events[0].target_id == str(grant.pk)
    assert events[0].on_behalf_of_label == "pat"
