"""Audit search: who may read what, the filters, keyset pages, the event page, exports and the API."""

from __future__ import annotations

import csv
import io
import json
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from audit import context
from audit.access import AuditReader
from audit.actions import Action, Result
from audit.filters import AuditEventFilter
from audit.models import AuditEvent
from audit.selectors import events_visible_to
from audit.services import Actor, checkpoint_create, record
from tests.audit.helpers import read_row, tamper, write_row
from tests.factories import AgentFactory, ToolServerFactory, UserFactory

pytestmark = pytest.mark.django_db

SEARCH = reverse("audit:search")
CSV = reverse("audit:export_csv")
JSONL = reverse("audit:export_jsonl")
API = reverse("audit:api_events")
XSS = '<script>alert("x")</script>'


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # The factories set passwords; PBKDF2 at full strength would dominate these tests' run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


@contextmanager
def in_request(request_id: str):
    token = context._current.set(context.RequestContext(request_id=request_id, client_ip="203.0.113.9"))
    try:
        yield
    finally:
        context._current.reset(token)


@pytest.fixture
def auditor(org):
    return UserFactory(organization=org, username="audrey", role="auditor")


@pytest.fixture
def world(org, other_org, admin, member, agent, tool_server):
    """Events in two organizations; names and parameters carry script and formula payloads."""
    other_admin = UserFactory(organization=other_org, username="otheradmin", role="admin")
    other_agent = AgentFactory(organization=other_org, owner=other_admin, name="secret-agent-b")
    hostile = AgentFactory(organization=org, owner=admin, name=XSS)
    with in_request("req-aaaa-0001"):
        record(
            action=Action.GRANT_CREATED,
            actor=admin,
            agent=agent,
            on_behalf_of=member,
            target=agent,
            capabilities=["records.read_own"],
            parameters={"reason": "care plan"},
        )
        record(
            action=Action.TOKEN_ISSUED,
            actor=agent,
            agent=agent,
            on_behalf_of=member,
            capabilities=["records.read_own"],
            parameters={"audience": tool_server.audience},
        )
    with in_request("req-bbbb-0002"):
        record(
            action=Action.DECISION_DENIED,
            actor=tool_server,
            result=Result.DENIED,
            agent=hostile,
            on_behalf_of=member,
            capabilities=["records.read_own", "records.write"],
            parameters={"patient_id": '=HYPERLINK("http://evil.example")', "note": XSS},
        )
    record(
        action=Action.TOKEN_REFUSED,
        actor=other_agent,
        result=Result.DENIED,
        agent=other_agent,
        parameters={"error": "invalid_scope", "marker": "organization-b-only"},
    )
    return {"agent": agent, "hostile": hostile, "other_agent": other_agent, "member": member}


def login(client, user):
    client.force_login(user)
    return user


def api(client, **params):
    response = client.get(API, params)
    return response, response.json()


def seqs(events) -> list[int]:
    return [event.seq for event in events]


# --- who may read -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["approver", "member"])
def test_approvers_and_members_cannot_open_audit_search(client, org, world, role):
    user = login(client, UserFactory(organization=org, role=role))
    event = AuditEvent.objects.filter(organization_id=org.pk).first()
    for url in (SEARCH, CSV, JSONL, reverse("audit:event", args=[event.seq])):
        response = client.get(url)
        assert response.status_code == 403, url
        assert b"care plan" not in response.content
    response = client.get(API)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not AuditEvent.objects.filter(action=Action.AUDIT_EXPORTED, actor_id=str(user.pk)).exists()


def test_anonymous_is_sent_to_sign_in_and_refused_by_the_api(client, world):
    response = client.get(SEARCH)
    assert response.status_code == 302 and reverse("governance:login") in response["Location"]
    assert client.get(CSV).status_code == 302
    assert client.get(API).status_code == 403


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_auditor_and_admin_see_only_their_organization(client, org, world, role):
    login(client, UserFactory(organization=org, role=role))
    page = client.get(SEARCH)
    assert page.status_code == 200
    content = page.content.decode()
    assert "secret-agent-b" not in content and "organization-b-only" not in content
    assert {e.organization_id for e in page.context["page"].events} == {org.pk}

    _, body = api(client)
    assert {row["organization_id"] for row in body["results"]} == {org.pk}
    for url in (CSV, JSONL):
        exported = b"".join(client.get(url).streaming_content).decode()
        assert "secret-agent-b" not in exported and "organization-b-only" not in exported
        assert "care plan" in exported

    other = AuditEvent.objects.get(agent_id=world["other_agent"].pk)
    assert client.get(reverse("audit:event", args=[other.seq])).status_code == 404
    # Paging "after" another organization's event answers as for an event that does not exist.
    assert client.get(SEARCH, {"after": other.seq}).status_code == 400
    assert client.get(SEARCH, {"after": 10**12}).status_code == 400
    response, body = api(client, after=other.seq)
    assert response.status_code == 400 and "after" in body["error"]["fields"]


def test_superuser_reads_every_organization(client, org, world):
    login(client, UserFactory(organization=org, is_superuser=True, is_staff=True))
    _, body = api(client, result="denied")
    labels = {row["agent_label"] for row in body["results"]}
    assert {"secret-agent-b", XSS} <= labels


# --- filters, one FilterSet for screen, export and API ------------------------------------------------


def _api_seqs(client, **params) -> list[int]:
    response, body = api(client, **params)
    assert response.status_code == 200, body
    return [row["seq"] for row in body["results"]]


def _screen_seqs(client, **params) -> list[int]:
    response = client.get(SEARCH, params)
    assert response.status_code == 200
    return seqs(response.context["page"].events)


def _csv_seqs(client, **params) -> list[int]:
    text = b"".join(client.get(CSV, params).streaming_content).decode()
    return [int(row["seq"]) for row in csv.DictReader(io.StringIO(text))]


def test_each_filter_narrows_the_same_way_on_screen_export_and_api(client, org, auditor, world, tool_server):
    login(client, auditor)
    events = {e.action: e for e in AuditEvent.objects.filter(organization_id=org.pk)}
    granted, issued, denied = events["grant.created"], events["token.issued"], events["decision.denied"]
    now = timezone.now()
    cases = [
        ({"agent": world["agent"].pk}, [issued, granted]),
        ({"agent": world["agent"].pk, "since": (now - timedelta(hours=1)).isoformat()}, [issued, granted]),
        ({"agent": world["agent"].pk, "until": (now - timedelta(hours=1)).isoformat()}, []),
        ({"result": "denied"}, [denied]),
        ({"action": "token.issued"}, [issued]),
        ({"request_id": "req-aaaa-0001"}, [issued, granted]),
        ({"q": "care PLAN"}, [granted]),
        ({"q": "100%"}, []),  # wildcards are text, not patterns
        ({"capability": "records.write"}, [denied]),
        ({"capability": "records.read"}, []),  # a whole key, not a prefix
        ({"tool_server": tool_server.pk}, [denied, issued]),  # as actor, and as the audience
        ({"actor": "admin"}, [granted]),
        ({"on_behalf_of": world["member"].pk, "order": "oldest"}, [granted, issued, denied]),
    ]
    for params, expected in cases:
        expected_seqs = seqs(expected)
        assert _api_seqs(client, **params) == expected_seqs, params
        assert _screen_seqs(client, **params) == expected_seqs, params
        assert _csv_seqs(client, **params) == expected_seqs, params


def test_keyset_pages_cover_every_event_once_in_time_order_even_with_equal_times(
    client, org, auditor, monkeypatch
):
    login(client, auditor)
    instant = timezone.now()
    monkeypatch.setattr("audit.services.timezone.now", lambda: instant)
    same_time = [
        record(action=Action.TOKEN_ISSUED, actor=Actor(type="system"), organization=org) for _ in range(7)
    ]
    monkeypatch.undo()
    later = [
        record(action=Action.TOKEN_ISSUED, actor=Actor(type="system"), organization=org) for _ in range(5)
    ]
    expected = [e.seq for e in sorted(same_time + later, key=lambda e: (e.occurred_at, e.seq), reverse=True)]

    got, params = [], {"limit": 3}
    while True:
        response, body = api(client, **params)
        got += [row["seq"] for row in body["results"]]
        if body["next"] is None:
            break
        params = {"limit": 3, "after": body["next"].split("after=")[1].split("&")[0]}
    assert got == expected

    oldest_first, params = [], {"limit": 4, "order": "oldest"}
    while True:
        response, body = api(client, **params)
        oldest_first += [row["seq"] for row in body["results"]]
        if body["next"] is None:
            break
        params = {"limit": 4, "order": "oldest", "after": body["next"].split("after=")[1].split("&")[0]}
    assert oldest_first == expected[::-1]


def test_the_screen_links_to_the_next_page_and_exports_the_whole_filter(client, org, auditor, monkeypatch):
    login(client, auditor)
    monkeypatch.setattr("audit.views.PAGE_SIZE", 2)
    made = [
        record(action=Action.TOKEN_ISSUED, actor=Actor(type="system"), organization=org) for _ in range(3)
    ]
    first = client.get(SEARCH, {"action": "token.issued"})
    assert seqs(first.context["page"].events) == [made[2].seq, made[1].seq]
    assert first.context["next_query"] == f"action=token.issued&after={made[1].seq}"
    second = client.get(f"{SEARCH}?{first.context['next_query']}")
    assert seqs(second.context["page"].events) == [made[0].seq]
    assert second.context["next_query"] is None
    assert "after" not in second.context["export_query"]


# --- the event page -----------------------------------------------------------------------------------


def test_event_page_shows_every_field_the_request_and_a_verified_chain(client, org, auditor, world):
    login(client, auditor)
    granted = AuditEvent.objects.get(action="grant.created")
    issued = AuditEvent.objects.get(action="token.issued")
    page = client.get(reverse("audit:event", args=[granted.seq]))
    assert page.status_code == 200
    content = page.content.decode()
    for value in (
        granted.hash,
        granted.prev_hash,
        "req-aaaa-0001",
        "203.0.113.9",
        "care plan",
        "records.read_own",
    ):
        assert value in content
    assert seqs(page.context["request_events"]) == [issued.seq]
    assert page.context["check"].ok is True and page.context["check"].signed_by is None

    checkpoint_create()
    page = client.get(reverse("audit:event", args=[granted.seq]))
    assert page.context["check"].ok is True
    assert page.context["check"].signed_by is not None
    assert "which covers it" in page.content.decode()


def test_event_page_reports_a_tampered_chain(client, org, auditor, world):
    login(client, auditor)
    checkpoint_create()
    granted = AuditEvent.objects.get(action="grant.created")
    denied = AuditEvent.objects.get(action="decision.denied")
    with tamper() as cursor:
        row = read_row(cursor, granted.seq)
        write_row(cursor, granted.seq, {"target_label": row["target_label"] + " (edited)"})
    for event in (granted, denied):
        page = client.get(reverse("audit:event", args=[event.seq]))
        assert page.context["check"].ok is False, event
        assert "does NOT verify" in page.content.decode()


def test_event_page_refuses_numbers_beyond_bigint(client, auditor):
    login(client, auditor)
    assert client.get(f"{SEARCH}events/{10**30}/").status_code == 404


# --- escaping and exports -----------------------------------------------------------------------------


def test_script_payloads_are_escaped_on_pages(client, auditor, world):
    login(client, auditor)
    denied = AuditEvent.objects.get(action="decision.denied")
    for url in (SEARCH, reverse("audit:event", args=[denied.seq])):
        content = client.get(url).content.decode()
        assert XSS not in content
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in content or "&lt;script&gt;" in content


def test_csv_export_neutralises_formulas_and_round_trips_every_value(client, auditor, world):
    login(client, auditor)
    response = client.get(CSV, {"result": "denied"})
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 1
    row = rows[0]
    assert row["agent_label"] == XSS  # CSV quoting keeps it as text; it is never HTML
    params = json.loads(row["parameters"])
    assert params["patient_id"].startswith("=HYPERLINK")  # inside JSON: not at the start of a cell
    for cell in row.values():
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_csv_cells_that_start_like_formulas_get_an_apostrophe(client, org, auditor):
    login(client, auditor)
    for label in ("=1+1", "+SUM(A1)", "-2", "@cmd", "\tx", "\rx"):
        record(action=Action.TOKEN_ISSUED, actor=Actor(type="system", label=label), organization=org)
    text = b"".join(client.get(CSV).streaming_content).decode()
    labels = [row["actor_label"] for row in csv.DictReader(io.StringIO(text))]
    # Control characters are cleaned by record() before storage; the rest is prefixed on export.
    assert {"'=1+1", "'+SUM(A1)", "'-2", "'@cmd"} <= set(labels)
    assert not any(label.startswith(("=", "+", "-", "@", "\t", "\r")) for label in labels)


def test_jsonl_export_is_one_object_per_line_and_is_itself_audited(client, org, auditor, world):
    login(client, auditor)
    response = client.get(JSONL, {"agent": world["hostile"].pk})
    lines = b"".join(response.streaming_content).decode().splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["agent_label"] for o in objects] == [XSS]
    assert objects[0]["parameters"]["note"] == XSS
    exported = AuditEvent.objects.get(action=Action.AUDIT_EXPORTED)
    assert exported.actor_id == str(auditor.pk) and exported.organization_id == org.pk
    expected = {"format": "jsonl", "filters": {"agent": str(world["hostile"].pk)}}
    assert json.loads(exported.parameters) == expected


# --- hostile input ------------------------------------------------------------------------------------

HOSTILE = [
    ("since", "2026-13-45T99:99"),
    ("since", "yesterday"),
    ("until", "2026-01-01T00:00\x00"),
    ("since", "9" * 5000),
    ("agent", "1e999"),
    ("agent", "9" * 400),
    ("agent", str(2**63)),
    ("on_behalf_of", "-1"),
    ("tool_server", "abc"),
    ("actor", "adm\x00in"),
    ("actor", "a" * 300),
    ("actor", "admin\u202e"),
    ("capability", "records.read_own\u2066"),
    ("request_id", "x" * 65),
    ("request_id", "req\x1b[31m"),
    ("q", "\x00\x00\x00"),
    ("q", "ab"),
    ("q", "q" * 201),
    ("q", "care\u200bplan"),
    ("action", "grant.created' OR '1'='1"),
    ("result", "\x00"),
    ("order", "sideways"),
    ("after", "0"),
    ("after", "x\x00"),
    ("after", str(2**64)),
]


@pytest.mark.parametrize(("name", "value"), HOSTILE)
def test_hostile_filters_give_a_plain_form_error_never_a_5xx(client, auditor, world, name, value):
    login(client, auditor)
    page = client.get(SEARCH, {name: value})
    assert page.status_code == 400
    assert b'role="alert"' in page.content
    response, body = api(client, **{name: value})
    assert response.status_code == 400
    assert body["error"]["code"] == "invalid"
    if name not in ("after",):  # exports take the filters only
        export = client.get(CSV, {name: value})
        assert export.status_code == 400 and b"Export refused" in export.content
    assert not AuditEvent.objects.filter(action=Action.AUDIT_EXPORTED).exists()


def test_a_reversed_time_range_is_a_form_error(client, auditor):
    login(client, auditor)
    page = client.get(SEARCH, {"since": "2026-02-01T00:00", "until": "2026-01-01T00:00"})
    assert page.status_code == 400 and b"must be before its end" in page.content


# --- forms and methods --------------------------------------------------------------------------------


def test_search_form_is_a_labelled_get_form_and_unsafe_methods_are_refused(client, auditor):
    login(client, auditor)
    content = client.get(SEARCH).content.decode()
    assert 'method="get"' in content
    for name in (
        "since",
        "until",
        "actor",
        "agent",
        "on_behalf_of",
        "capability",
        "tool_server",
        "action",
        "result",
        "request_id",
        "q",
        "order",
    ):
        assert f'for="id_{name}"' in content and f'id="id_{name}"' in content, name
    assert client.post(SEARCH).status_code == 405
    assert client.post(CSV).status_code == 405
    csrf_client = client.__class__(enforce_csrf_checks=True)
    csrf_client.force_login(auditor)
    assert csrf_client.post(API, {}).status_code in (403, 405)


def test_tool_server_and_agent_lists_are_the_organizations_own(client, org, other_org, auditor, world):
    ToolServerFactory(organization=other_org, name="Other records", audience="https://other.example.test/mcp")
    login(client, auditor)
    form = client.get(SEARCH).context["form"]
    agent_choices = dict(form.fields["agent"].widget.choices)
    assert world["agent"].pk in agent_choices and world["other_agent"].pk not in agent_choices
    assert "Other records" not in dict(form.fields["tool_server"].widget.choices).values()


# --- PostgreSQL: free text and its index (the other plans need a big table: bench/audit_search.py) -----


def _plan(queryset, *settings: str) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        for setting in ("enable_seqscan", *settings):
            cursor.execute(f"SET LOCAL {setting} = off")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.postgres
def test_postgresql_can_serve_free_text_from_the_trigram_index(org, auditor, world):
    reader = AuditReader(organization_id=org.pk)

    def search(reader=reader, **params):
        filterset = AuditEventFilter(params, queryset=events_visible_to(reader), reader=reader)
        assert filterset.is_valid(), filterset.errors
        return filterset.qs[:51]

    with transaction.atomic():
        # The expression the free-text filter writes (ILIKE, not Django's UPPER() LIKE) can use the index.
        everyone = AuditReader(organization_id=None)
        assert "audit_parameters_trgm" in _plan(search(everyone, q="care plan"), "enable_indexscan")


def test_a_tampered_row_whose_parameters_are_not_json_is_still_shown_and_exported(client, auditor, world):
    login(client, auditor)
    granted = AuditEvent.objects.get(action="grant.created")
    with tamper() as cursor:
        write_row(cursor, granted.seq, {"parameters": "{not json <b>"})
    page = client.get(reverse("audit:event", args=[granted.seq]))
    assert page.status_code == 200 and "{not json &lt;b&gt;" in page.content.decode()
    _, body = api(client, action="grant.created")
    assert body["results"][0]["parameters"] == "{not json <b>"
    lines = b"".join(client.get(JSONL, {"action": "grant.created"}).streaming_content).decode().splitlines()
    assert json.loads(lines[0])["parameters"] == "{not json <b>"
