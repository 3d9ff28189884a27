"""One text rule for every name, description and reason a service writes: no NUL, control or bidirectional
formatting characters.  Refused with a sentence, nothing written, never a database error (PostgreSQL refuses
NUL in text with DataError)."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance import services
from governance.errors import InvalidInput
from governance.models import Agent, Grant, Organization, ToolServer, User
from governance.text import text_problem

pytestmark = pytest.mark.django_db

HOSTILE = [
    pytest.param("a\x00b", "control characters", id="nul"),
    pytest.param("a\x1b[2Jb", "control characters", id="escape"),
    pytest.param("a\u202eb", "bidirectional", id="rlo"),
    pytest.param("\u2066a\u2069", "bidirectional", id="isolate"),
    pytest.param("a\u200fb", "bidirectional", id="rlm"),
    pytest.param("a\u2029b", "control characters", id="paragraph-separator"),
]


@pytest.mark.parametrize(("value", "reason"), HOSTILE)
def test_each_service_refuses_hostile_names(admin, org, member, capability, value, reason):
    writes = [
        lambda: services.organization_create(actor=SYSTEM, slug="new-org", name=value),
        lambda: services.user_create(actor=admin, organization=org, username="newcomer", first_name=value),
        lambda: services.user_update(actor=admin, user=member, last_name=value),
        lambda: services.tool_server_create(
            actor=admin, organization=org, name=value, audience="https://new.example.test/api"
        ),
        lambda: services.agent_create(
            actor=admin, organization=org, name=value, kind="background", owner=admin
        ),
        lambda: services.capability_create(
            actor=admin, tool_server=capability.tool_server, key="records.other", description=value + "\n"
        ),
    ]
    before = AuditEvent.objects.count()
    for write in writes:
        with pytest.raises(InvalidInput, match=reason):
            write()
    assert AuditEvent.objects.count() == before
    assert not Organization.objects.filter(slug="new-org").exists()
    assert not User.objects.filter(username="newcomer").exists()
    assert not ToolServer.objects.filter(audience="https://new.example.test/api").exists()
    assert Agent.objects.count() == 0 and not capability.tool_server.capabilities.filter(key="records.other")
    member.refresh_from_db()
    assert member.last_name != value


def test_multi_line_text_keeps_its_line_breaks(admin, org, agent, capability, member):
    grant = services.grant_create(
        actor=admin, agent=agent, capability=capability, user=member, reason="first line\n\tsecond line"
    )
    assert Grant.objects.get(pk=grant.pk).reason == "first line\n\tsecond line"
    with pytest.raises(InvalidInput, match="control characters"):
        services.user_create(actor=admin, organization=org, username="x", first_name="one\ntwo")


def test_the_rule_never_echoes_the_value():
    assert text_problem("evil\u202etxt.exe", max_length=100) == "contains bidirectional formatting characters"
    assert text_problem("x" * 11, max_length=10) == "is 11 characters long; at most 10 are allowed"
    assert text_problem("Zoë 👩‍⚕️ Ørsted", max_length=100) is None  # letters, emoji and joiners are fine
