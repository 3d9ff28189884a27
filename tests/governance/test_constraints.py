"""The database itself refuses every forbidden governance state, whoever writes it.

Each case writes directly (ORM or raw SQL, never a service), expects IntegrityError, and then writes the
nearest allowed state to show the refusal is specific.  Runs on SQLite and on PostgreSQL (.ci/run).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from governance.migrations import _triggers
from governance.models import Agent, Capability, Grant, ToolServer, User
from tests.factories import (
    AdminFactory,
    AgentFactory,
    CapabilityFactory,
    OrganizationFactory,
    ToolServerFactory,
    UserFactory,
)


@dataclass
class World:
    org: object
    other: object
    member: User
    outsider: User
    server: ToolServer
    cap: Capability
    cap2: Capability
    other_cap: Capability
    agent: Agent
    background: Agent
    other_agent: Agent


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # The factories set passwords; PBKDF2 at full strength would dominate these tests' run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


@pytest.fixture
def w(db) -> World:
    org = OrganizationFactory(slug="clinic")
    other = OrganizationFactory(slug="elsewhere")
    admin = AdminFactory(organization=org)
    server = ToolServerFactory(organization=org)
    cap = CapabilityFactory(tool_server=server, key="records.read_own")
    cap2 = CapabilityFactory(tool_server=server, key="records.write_own")
    other_cap = CapabilityFactory(tool_server=ToolServerFactory(organization=other), key="records.read_own")
    return World(
        org=org,
        other=other,
        member=UserFactory(organization=org),
        outsider=UserFactory(organization=other),
        server=server,
        cap=cap,
        cap2=cap2,
        other_cap=other_cap,
        agent=AgentFactory(organization=org, owner=admin, ceiling=[cap]),
        background=AgentFactory(organization=org, owner=admin, kind="background", ceiling=[cap]),
        other_agent=AgentFactory(organization=other, ceiling=[other_cap]),
    )


def grant(w: World, **fields) -> Grant:
    values = {"organization": w.org, "agent": w.agent, "capability": w.cap, "user": w.member} | fields
    return Grant.objects.create(**values)


def sql(statement: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def insert_grant_sql(*, org, agent, capability, user) -> None:
    sql(
        "INSERT INTO governance_grant (organization_id, agent_id, capability_id, user_id, reason, "
        "revoke_reason, created_at) VALUES (%s, %s, %s, %s, '', '', %s)",
        [org.pk, agent.pk, capability.pk, getattr(user, "pk", None), timezone.now()],
    )


def move(instance, **fields) -> None:
    for name, value in fields.items():
        setattr(instance, name, value)
    instance.save()


# Each case: setup(w) -> (bad, good, message); message is a fragment of the refusal (None: any constraint).
CASES = {}


def case(name):
    def register(function):
        CASES[name] = function
        return function

    return register


@case("grant: agent and capability of different organizations")
def _(w):
    return (lambda: grant(w, capability=w.other_cap), lambda: grant(w), "grant crosses organizations")


@case("grant: user of another organization (raw SQL)")
def _(w):
    return (
        lambda: insert_grant_sql(org=w.org, agent=w.agent, capability=w.cap, user=w.outsider),
        lambda: insert_grant_sql(org=w.org, agent=w.agent, capability=w.cap, user=w.member),
        "grant crosses organizations",
    )


@case("grant: its organization is not the agent's")
def _(w):
    return (lambda: grant(w, organization=w.other), lambda: grant(w), "grant crosses organizations")


@case("grant: outside the agent's ceiling")
def _(w):
    def good():
        w.agent.ceiling.add(w.cap2)
        grant(w, capability=w.cap2)

    return (lambda: grant(w, capability=w.cap2), good, "ceiling")


@case("grant: second open grant for the same user, agent and capability")
def _(w):
    first = grant(w)

    def good():
        move(first, revoked_at=timezone.now())
        grant(w)

    return (lambda: grant(w), good, None)


@case("grant: second open grant even when the first has expired")
def _(w):
    first = grant(w)
    Grant.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=2))
    Grant.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(days=1))

    def good():
        Grant.objects.filter(pk=first.pk).update(revoked_at=timezone.now())
        grant(w)

    return (lambda: grant(w), good, None)


@case("grant: second open service grant of a background agent (raw SQL)")
def _(w):
    insert_grant_sql(org=w.org, agent=w.background, capability=w.cap, user=None)
    first = Grant.objects.get(agent=w.background)

    def good():
        sql("UPDATE governance_grant SET revoked_at = %s WHERE id = %s", [timezone.now(), first.pk])
        insert_grant_sql(org=w.org, agent=w.background, capability=w.cap, user=None)

    return (lambda: insert_grant_sql(org=w.org, agent=w.background, capability=w.cap, user=None), good, None)


@case("grant: a background agent's grant names a user")
def _(w):
    return (
        lambda: grant(w, agent=w.background, user=w.member),
        lambda: grant(w, agent=w.background, user=None),
        "background agent's grant cannot name a user",
    )


@case("grant: an interactive agent's grant names no user")
def _(w):
    return (lambda: grant(w, user=None), lambda: grant(w), "must name a user")


@case("grant: user, agent or capability changed afterwards")
def _(w):
    other_member = UserFactory(organization=w.org)
    existing = grant(w)
    return (
        lambda: Grant.objects.filter(pk=existing.pk).update(user=other_member),
        lambda: grant(w, user=other_member),
        "never change",
    )


@case("grant: a revoked grant reopened")
def _(w):
    existing = grant(w)
    move(existing, revoked_at=timezone.now())
    return (
        lambda: Grant.objects.filter(pk=existing.pk).update(revoked_at=None),
        lambda: Grant.objects.filter(pk=existing.pk).update(revoke_reason="kept closed"),
        "cannot be reopened",
    )


@case("grant: revoked before it was created")
def _(w):
    existing = grant(w)
    return (
        lambda: Grant.objects.filter(pk=existing.pk).update(revoked_at=existing.created_at - timedelta(1)),
        lambda: Grant.objects.filter(pk=existing.pk).update(revoked_at=existing.created_at + timedelta(1)),
        None,
    )


@case("ceiling: an entry an open grant uses is removed")
def _(w):
    existing = grant(w)

    def good():
        move(existing, revoked_at=timezone.now())
        w.agent.ceiling.remove(w.cap)

    return (lambda: w.agent.ceiling.remove(w.cap), good, "revoke the open grants")


@case("ceiling: an entry an open grant uses is deleted (raw SQL)")
def _(w):
    grant(w)
    delete = "DELETE FROM governance_agent_ceiling WHERE agent_id = %s AND capability_id = %s"
    return (
        lambda: sql(delete, [w.agent.pk, w.cap.pk]),
        lambda: sql(delete, [w.background.pk, w.cap.pk]),
        "revoke the open grants",
    )


@case("ceiling: an entry an open grant uses is rewritten in place (raw SQL)")
def _(w):
    grant(w)
    update = (
        "UPDATE governance_agent_ceiling SET capability_id = %s WHERE agent_id = %s AND capability_id = %s"
    )
    return (
        lambda: sql(update, [w.cap2.pk, w.agent.pk, w.cap.pk]),
        lambda: sql(update, [w.cap2.pk, w.background.pk, w.cap.pk]),
        "revoke the open grants",
    )


@case("ceiling: another organization's capability")
def _(w):
    return (
        lambda: w.agent.ceiling.add(w.other_cap),
        lambda: w.agent.ceiling.add(w.cap2),
        "ceiling cannot hold",
    )


@case("ceiling: rewritten in place to another organization's capability (raw SQL)")
def _(w):
    update = "UPDATE governance_agent_ceiling SET capability_id = %s WHERE agent_id = %s"
    return (
        lambda: sql(update, [w.other_cap.pk, w.agent.pk]),
        lambda: sql(update, [w.cap2.pk, w.agent.pk]),
        "ceiling cannot hold",
    )


@case("agent: kind changed under grants")
def _(w):
    grant(w)
    spare = AgentFactory(organization=w.org, owner=w.agent.owner)
    return (
        lambda: move(w.agent, kind="background"),
        lambda: move(spare, kind="background"),
        "cannot change kind",
    )


@case("agent: organization changed under grants (raw SQL)")
def _(w):
    grant(w)
    update = "UPDATE governance_agent SET organization_id = %s WHERE id = %s"
    spare = AgentFactory(organization=w.org, owner=w.agent.owner)
    return (
        lambda: sql(update, [w.other.pk, w.agent.pk]),
        lambda: sql(update, [w.other.pk, spare.pk]),
        "cannot change kind or organization",
    )


@case("agent: moved to another organization with a ceiling")
def _(w):
    def good():
        w.background.ceiling.clear()
        move(w.background, organization=w.other)

    return (lambda: move(w.background, organization=w.other), good, "empty the agent's ceiling")


@case("user: organization changed under open grants")
def _(w):
    grant(w)
    spare = UserFactory(organization=w.org)
    return (
        lambda: move(w.member, organization=w.other),
        lambda: move(spare, organization=w.other),
        "open grants",
    )


@case("capability: granted capability moved to another tool server")
def _(w):
    grant(w)
    second_server = ToolServerFactory(organization=w.org)
    return (
        lambda: move(w.cap, tool_server=second_server),
        lambda: move(w.cap2, tool_server=second_server),
        "granted capability cannot move",
    )


@case("capability: capability in a ceiling moved to another organization")
def _(w):
    foreign_server = ToolServerFactory(organization=w.other)
    return (
        lambda: move(w.cap, tool_server=foreign_server),
        lambda: move(w.cap2, tool_server=foreign_server),
        "cannot move to another organization",
    )


@case("tool server: moved to another organization with capabilities")
def _(w):
    empty = ToolServerFactory(organization=w.org)
    return (
        lambda: move(w.server, organization=w.other),
        lambda: move(empty, organization=w.other),
        "capabilities",
    )


BAD_KEYS = [
    "Records.read",
    "records",
    "records.read\n",
    "records..read",
    "records.read-own",
    "records.read own",
    ".records.read",
    "records.read.",
]


@pytest.mark.parametrize("bad_key", BAD_KEYS)
def test_capability_key_shape(w, bad_key):
    with pytest.raises(IntegrityError), transaction.atomic():
        Capability.objects.create(tool_server=w.server, key=bad_key)
    with pytest.raises(IntegrityError), transaction.atomic():
        sql("UPDATE governance_capability SET key = %s WHERE id = %s", [bad_key, w.cap2.pk])
    Capability.objects.create(tool_server=w.server, key="records.read_own_2")
    sql("UPDATE governance_capability SET key = %s WHERE id = %s", ["appointments.cancel", w.cap2.pk])


@pytest.mark.parametrize(("requires", "count"), [(True, 0), (False, 1), (False, 3)])
def test_approval_count_must_match_requires_approval(w, requires, count):
    with pytest.raises(IntegrityError), transaction.atomic():
        Capability.objects.filter(pk=w.cap.pk).update(requires_approval=requires, approvals_required=count)
    consistent = {"requires_approval": requires, "approvals_required": int(requires)}
    Capability.objects.filter(pk=w.cap.pk).update(**consistent)


@pytest.mark.parametrize(
    ("table", "column", "bad", "good"),
    [
        ("governance_user", "role", "owner", "auditor"),
        ("governance_agent", "kind", "robot", "background"),
        ("governance_agent", "status", "paused", "suspended"),
        ("governance_capability", "risk_level", "extreme", "critical"),
    ],
)
def test_enumerations_are_checked(w, table, column, bad, good):
    rows = {"governance_user": w.member, "governance_agent": w.background, "governance_capability": w.cap2}
    row = rows[table]
    statement = f"UPDATE {table} SET {column} = %s WHERE id = %s"  # noqa: S608 - fixed names above
    with pytest.raises(IntegrityError), transaction.atomic():
        sql(statement, [bad, row.pk])
    with pytest.raises(IntegrityError), transaction.atomic():
        type(row).objects.filter(pk=row.pk).update(**{column: bad})
    sql(statement, [good, row.pk])


@pytest.mark.parametrize("name", list(CASES))
def test_database_refuses(w, name):
    bad, good, message = CASES[name](w)
    with pytest.raises(IntegrityError) as refused, transaction.atomic():
        bad()
    if message:
        assert message in str(refused.value)
    with transaction.atomic():
        good()


def test_every_trigger_is_installed(db):
    assert _triggers.installed(connection) == {name for name, _ in _triggers.NAMES}


@pytest.mark.django_db(transaction=True)
def test_flush_empties_tables_with_open_grants_and_keeps_the_triggers(w):
    """Transactional tests flush after each test; on SQLite that deletes the ceiling before the grants."""
    grant(w)
    call_command("flush", interactive=False, verbosity=0)
    assert not Grant.objects.exists() and not Agent.ceiling.through.objects.exists()
    assert _triggers.installed(connection) == {name for name, _ in _triggers.NAMES}


# PostgreSQL: two transactions racing must not together commit what each alone could not.


def _raw_connection():
    settings = connection.settings_dict
    return psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=False,
    )


def _wait_until_blocked(pid: int, thread: threading.Thread) -> None:
    """Return once the backend waits for a lock (or its thread has already finished)."""
    with _raw_connection() as watcher:
        watcher.autocommit = True
        while thread.is_alive():
            query = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
            row = watcher.execute(query, [pid]).fetchone()
            if row and row[0] == "Lock":
                return
            threading.Event().wait(0.01)


def _in_thread(conn, statement, params):
    outcome = {}

    def run():
        try:
            conn.execute(statement, params)
            conn.commit()
            outcome["ok"] = True
        except psycopg.Error as exc:
            conn.rollback()
            outcome["error"] = str(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


GRANT_INSERT = (
    "INSERT INTO governance_grant (organization_id, agent_id, capability_id, user_id, reason, revoke_reason, "
    "created_at) VALUES (%s, %s, %s, %s, '', '', now())"
)
CEILING_DELETE = "DELETE FROM governance_agent_ceiling WHERE agent_id = %s AND capability_id = %s"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first", ["ceiling removal", "grant"])
def test_concurrent_grant_and_ceiling_removal_cannot_both_commit(first):
    org = OrganizationFactory(slug="race")
    admin = AdminFactory(organization=org)
    user = UserFactory(organization=org)
    cap = CapabilityFactory(tool_server=ToolServerFactory(organization=org), key="records.read_own")
    agent = AgentFactory(organization=org, owner=admin, ceiling=[cap])
    removal = (CEILING_DELETE, [agent.pk, cap.pk])
    insertion = (GRANT_INSERT, [org.pk, agent.pk, cap.pk, user.pk])
    early, late = (removal, insertion) if first == "ceiling removal" else (insertion, removal)
    with _raw_connection() as a, _raw_connection() as b:
        a.execute(*early)  # passes its own check; not yet committed
        thread, outcome = _in_thread(b, *late)
        _wait_until_blocked(b.info.backend_pid, thread)
        a.commit()
        thread.join()
    assert "error" in outcome, "both transactions committed: a grant now stands outside the ceiling"
    open_grants = Grant.objects.filter(agent=agent, revoked_at__isnull=True).count()
    in_ceiling = agent.ceiling.filter(pk=cap.pk).exists()
    assert (open_grants, in_ceiling) == ((0, False) if first == "ceiling removal" else (1, True))
