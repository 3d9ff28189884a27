"""Policy files: apply, idempotence, dry runs, refusals (whole, with the path), export round trip."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from jwcrypto import jwk

from audit.models import AuditEvent
from governance.models import Agent, Capability, Grant, Organization, ToolServer, User
from governance.policy import export_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "clinic.yaml"
CLINIC = yaml.safe_load(EXAMPLE.read_text())

pytestmark = pytest.mark.django_db


def clinic() -> dict:
    return copy.deepcopy(CLINIC)


def write(tmp_path: Path, document: dict | str, name: str = "clinic.yaml") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


def run(path: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("policy", "apply", str(path), *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def events_after(seq: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(seq__gt=seq).order_by("seq"))


def head() -> int:
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def row_counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (Organization, User, ToolServer, Capability, Agent, Grant)
    }


def grant_of(agent: str, capability: str, user: str | None) -> dict:
    return {"agent": agent, "capability": capability, **({"user": user} if user else {})}


# Applying ---


def test_apply_creates_everything_through_the_services(tmp_path):
    output = run(EXAMPLE)

    assert "applied 29 changes" in output
    org = Organization.objects.get(slug="clinic")
    assert set(User.objects.filter(organization=org).values_list("username", flat=True)) == {
        "dana",
        "ravi",
        "mei",
        "audra",
        "alice",
        "bob",
        "carol",
    }
    assert not any(u.has_usable_password() for u in User.objects.all())
    cancel = Capability.objects.get(key="appointments.cancel")
    assert (
        cancel.risk_level,
        cancel.requires_approval,
        cancel.approvals_required,
        cancel.requires_step_up,
    ) == ("high", True, 1, True)
    assert Capability.objects.get(key="prescriptions.request").approvals_required == 2
    constraints = Capability.objects.get(key="records.read_own").constraints
    assert constraints == {"patient_id": {"equals": "$user.patient_id"}}
    voice = Agent.objects.get(name="voice-assistant")
    assert voice.kind == "interactive" and voice.application.redirect_uris == "http://127.0.0.1:8765/callback"
    assert [k["kid"] for k in voice.jwks["keys"]] == ["voice-agent-2025"]
    assert all("d" not in k for a in Agent.objects.all() for k in a.jwks["keys"])
    assert set(voice.ceiling.values_list("key", flat=True)) == {"records.read_own", "appointments.book"}
    assert set(Grant.objects.filter(agent=voice).values_list("user__username", flat=True)) == {"alice", "bob"}
    assert list(Grant.objects.filter(agent__name="billing-runner").values_list("user", flat=True)) == [
        None,
        None,
    ]

    events = events_after(0)
    assert Counter(e.action for e in events) == {
        "organization.created": 1,
        "user.created": 7,
        "tool_server.created": 2,
        "capability.created": 6,
        "agent.created": 3,
        "grant.created": 10,
        "policy.applied": 1,
    }
    assert {(e.actor_type, e.actor_label) for e in events} == {("system", "policy apply clinic.yaml")}
    summary = events[-1]
    assert summary.action == "policy.applied" and summary.organization_id == org.pk
    parameters = json.loads(summary.parameters)
    assert parameters["sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert parameters["changes"] == 29 and parameters["counts"]["grant.create"] == 10


def test_second_apply_changes_nothing_and_says_so():
    run(EXAMPLE)
    before, rows = head(), row_counts()

    assert run(EXAMPLE).strip() == "no changes"
    assert head() == before
    assert row_counts() == rows


def test_dry_run_prints_the_plan_and_writes_nothing():
    output = run(EXAMPLE, "--dry-run")

    assert "create agent voice-assistant (agents[0])" in output
    assert "create grant billing.invoice_send for service via billing-runner (grants[9])" in output
    assert "nothing written" in output
    assert head() == 0
    assert set(row_counts().values()) == {0}


def test_dry_run_of_changes_names_each_change_with_its_path(tmp_path):
    run(EXAMPLE)
    document = clinic()
    document["users"][1]["role"] = "admin"
    document["tool_servers"][0]["capabilities"][1]["daily_quota"] = 5
    before = head()

    output = run(write(tmp_path, document), "--dry-run")

    assert "update user ravi (users[1]): role: 'approver' → 'admin'" in output
    assert (
        "update capability appointments.book (tool_servers[0].capabilities[1]): daily_quota: 20 → 5" in output
    )
    assert head() == before
    assert User.objects.get(username="ravi").role == "approver"


def test_changes_go_through_the_matching_services(tmp_path):
    run(EXAMPLE)
    document = clinic()
    later = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    document["users"][1]["role"] = "admin"
    document["agents"][0]["description"] = "Answers the phone."
    document["agents"][0]["ceiling"].append("appointments.cancel")
    document["agents"][1]["status"] = "suspended"
    document["grants"][0]["expires_at"] = later.isoformat()
    document["grants"][7]["revoked"] = True
    document["grants"].append(
        {**grant_of("voice-assistant", "appointments.cancel", "alice"), "reason": "moved"}
    )
    before = head()

    run(write(tmp_path, document))

    actions = Counter(e.action for e in events_after(before))
    assert actions == {
        "user.role_changed": 1,
        "agent.updated": 1,
        "agent.ceiling_changed": 1,
        "agent.suspended": 1,
        "grant.renewed": 1,
        "grant.revoked": 1,
        "grant.created": 1,
        "policy.applied": 1,
    }
    assert Agent.objects.get(name="support-assistant").status == "suspended"
    assert (
        Grant.objects.get(
            agent__name="voice-assistant", capability__key="records.read_own", user__username="alice"
        ).expires_at
        == later
    )
    prescription = Grant.objects.get(capability__key="prescriptions.request")
    assert prescription.revoked_at is not None
    assert run(write(tmp_path, document)).strip() == "no changes"


def test_removing_a_capability_from_a_ceiling_needs_its_grants_revoked(tmp_path):
    run(EXAMPLE)
    document = clinic()
    document["agents"][0]["ceiling"] = ["records.read_own"]
    before = head()

    with pytest.raises(CommandError) as refused:
        run(write(tmp_path, document))
    assert "clinic.yaml: agents[0].ceiling: removing appointments.book needs its open grant for alice" in str(
        refused.value
    )
    assert [e.action for e in events_after(before)] == ["policy.refused"]

    for index in (1, 3):  # appointments.book for alice and bob
        document["grants"][index]["revoked"] = True
    run(write(tmp_path, document))
    actions = [e.action for e in events_after(before + 1)]
    assert actions == ["grant.revoked", "grant.revoked", "agent.ceiling_changed", "policy.applied"]
    assert set(Agent.objects.get(name="voice-assistant").ceiling.values_list("key", flat=True)) == {
        "records.read_own"
    }


def test_what_the_file_does_not_name_is_left_alone(tmp_path):
    run(EXAMPLE)
    minimal = {
        "version": 1,
        "organizations": [{"slug": "clinic", "name": "Riverside Clinic"}],
        "users": [{"username": "erin", "role": "member"}],
    }
    run(write(tmp_path, minimal, "erin.yaml"))

    assert User.objects.filter(organization__slug="clinic").count() == 8
    assert Grant.objects.filter(revoked_at__isnull=True).count() == 10


def test_a_file_may_refer_to_objects_that_exist_only_in_the_database(tmp_path):
    run(EXAMPLE)
    text = (
        "version: 1\n"
        "grants:\n"
        "  - {organization: clinic, agent: support-assistant, capability: records.read_own, user: alice,\n"
        "     expires_at: 2031-01-31T09:00:00Z}\n"
    )
    before = head()
    run(write(tmp_path, text, "extra.yaml"))

    grant = Grant.objects.get(agent__name="support-assistant", capability__key="records.read_own")
    assert (grant.user.username, grant.expires_at.isoformat()) == ("alice", "2031-01-31T09:00:00+00:00")
    assert [e.action for e in events_after(before)] == ["grant.created", "policy.applied"]
    date_only = text.replace("2031-01-31T09:00:00Z", "2031-01-31")
    with pytest.raises(CommandError, match=r"grants\[0\]\.expires_at: must be a timestamp with a time zone"):
        run(write(tmp_path, date_only, "extra.yaml"))
    no_org = text.replace("organization: clinic, ", "")
    with pytest.raises(CommandError, match=r"grants\[0\]\.organization: is required when the file"):
        run(write(tmp_path, no_org, "extra.yaml"))


# Refusals ---

PRIVATE_KEY = json.loads(jwk.JWK.generate(kty="EC", crv="P-256").export_private())


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def mutate(document):
        target = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def _append(key, entry):
    return lambda document: document[key].append(entry)


INVALID = [
    ("unknown key", _set("agents", 0, "colour", "blue"), "agents[0].colour: unknown key"),
    ("unknown top-level key", _set("roles", []), "clinic.yaml: roles: unknown key"),
    ("missing version", lambda d: d.pop("version"), "version: is required"),
    (
        "wrong type",
        _set("tool_servers", 0, "capabilities", 0, "max_token_lifetime", "300"),
        "tool_servers[0].capabilities[0].max_token_lifetime: must be a whole number",
    ),
    (
        "boolean as string",
        _set("tool_servers", 0, "capabilities", 2, "requires_step_up", "yes"),
        "tool_servers[0].capabilities[2].requires_step_up: must be true or false",
    ),
    (
        "unknown ceiling capability",
        _set("agents", 1, "ceiling", 2, "records.delete_all"),
        "agents[1].ceiling[2]: no capability records.delete_all",
    ),
    ("grant names an unknown user", _set("grants", 0, "user", "mallory"), "grants[0].user: no user mallory"),
    (
        "grant names an unknown agent",
        _set("grants", 2, "agent", "ghost"),
        "grants[2].agent: no agent 'ghost'",
    ),
    (
        "grant names an unknown capability",
        _set("grants", 1, "capability", "appointments.move"),
        "grants[1].capability: no capability appointments.move",
    ),
    (
        "capability key shape",
        _set("tool_servers", 0, "capabilities", 0, "key", "Records.Read"),
        "tool_servers[0].capabilities[0].key: 'Records.Read' is not a capability key",
    ),
    (
        "audience without scheme",
        _set("tool_servers", 0, "audience", "records.clinic.example/mcp"),
        "tool_servers[0].audience: 'records.clinic.example/mcp' must be an absolute https URI",
    ),
    (
        "audience with fragment",
        _set("tool_servers", 1, "audience", "https://billing.clinic.example/api#x"),
        "tool_servers[1].audience: 'https://billing.clinic.example/api#x' must not have a fragment",
    ),
    (
        "plain http audience",
        _set("tool_servers", 1, "audience", "http://billing.clinic.example/api"),
        "tool_servers[1].audience: 'http://billing.clinic.example/api' must use https",
    ),
    (
        "redirect URI over plain http",
        _set("agents", 0, "redirect_uris", ["http://evil.example/cb"]),
        "agents[0].redirect_uris[0]: 'http://evil.example/cb' must use https",
    ),
    (
        "grant outside the ceiling",
        _append("grants", grant_of("voice-assistant", "prescriptions.request", "alice")),
        "grants[10].capability: prescriptions.request is outside the ceiling of agent voice-assistant",
    ),
    (
        "background grant names a user",
        _set("grants", 8, "user", "alice"),
        "grants[8].user: billing-runner is a background agent",
    ),
    (
        "interactive grant without user",
        lambda d: d["grants"][0].pop("user"),
        "grants[0].user: voice-assistant is an interactive agent",
    ),
    (
        "private key in JWKS",
        _set("agents", 2, "jwks", {"keys": [PRIVATE_KEY]}),
        "agents[2].jwks.keys[0]: contains private key material",
    ),
    (
        "duplicate username",
        _append("users", {"username": "alice"}),
        "users[7]: repeats the username of users[4]",
    ),
    (
        "duplicate agent name",
        _append("agents", {"name": "voice-assistant", "kind": "interactive", "owner": "dana"}),
        "agents[3]: repeats the name of agents[0]",
    ),
    (
        "duplicate grant",
        _append("grants", grant_of("billing-runner", "billing.invoice_send", None)),
        "grants[10]: repeats the agent, capability and user of grants[9]",
    ),
    (
        "duplicate capability key",
        _set("tool_servers", 1, "capabilities", 1, "key", "records.read_own"),
        "tool_servers[1].capabilities[1]: repeats the capability key of tool_servers[0].capabilities[0]",
    ),
    (
        "overlong description",
        _set("agents", 0, "description", "x" * 5000),
        "agents[0].description: is 5000 characters long",
    ),
    (
        "control characters in a name",
        _set("agents", 0, "name", "voice\x1b[2J"),
        "agents[0].name: contains control characters",
    ),
    (
        "approval without approvers",
        _set("tool_servers", 0, "capabilities", 2, "approvals_required", 0),
        "tool_servers[0].capabilities[2].approvals_required: must be at least 1",
    ),
    (
        "expiry in the past",
        _set("grants", 0, "expires_at", "2001-01-01T00:00:00Z"),
        "grants[0].expires_at: is in the past",
    ),
    (
        "expiry without time zone",
        _set("grants", 0, "expires_at", "2031-01-01T00:00:00"),
        "grants[0].expires_at: must carry a time zone",
    ),
    (
        "owner outside the organization",
        _set("agents", 0, "owner", "nobody"),
        "agents[0].owner: no user nobody",
    ),
    (
        "background agent with redirect URIs",
        _set("agents", 2, "redirect_uris", ["http://127.0.0.1:9/cb"]),
        "agents[2].redirect_uris: a background agent has no redirect URIs",
    ),
    (
        "bad constraint rule",
        _set("tool_servers", 0, "capabilities", 0, "constraints", {"patient_id": {"like": 1}}),
        "tool_servers[0].capabilities[0].constraints.patient_id.like: unknown key",
    ),
    ("unknown status", _set("agents", 0, "status", "paused"), "agents[0].status: 'paused' is not one of"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_an_invalid_file_is_refused_whole_with_its_path(tmp_path, mutate, expected):
    document = clinic()
    mutate(document)

    with pytest.raises(CommandError) as refused:
        run(write(tmp_path, document))

    assert refused.value.returncode == 1
    assert expected in str(refused.value)
    assert set(row_counts().values()) == {0}
    events = events_after(0)
    assert [(e.action, e.result) for e in events] == [("policy.refused", "failure")]
    assert expected in events[0].parameters
    assert PRIVATE_KEY["d"] not in str(refused.value) + events[0].parameters


def test_a_refused_dry_run_records_nothing(tmp_path):
    document = clinic()
    document["grants"][0]["user"] = "mallory"
    with pytest.raises(CommandError, match=r"grants\[0\]\.user"):
        run(write(tmp_path, document), "--dry-run")
    assert head() == 0


def test_a_service_refusal_mid_apply_rolls_everything_back(tmp_path):
    # The file's shape is fine, but the model's URL validator refuses a host without a domain: the
    # organization and users created earlier in the same run are rolled back.
    document = clinic()
    document["tool_servers"][1]["audience"] = "https://billing/api"
    with pytest.raises(CommandError) as refused:
        run(write(tmp_path, document))
    assert "tool_servers[1]" in str(refused.value)
    assert set(row_counts().values()) == {0}
    assert [e.action for e in events_after(0)] == ["policy.refused"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nusers:\n  - &a {username: x}\n  - *a\n", "anchors and aliases are not allowed"),
        (
            "version: 1\norganizations:\n  - {slug: a, name: A}\nusers:\n  - username: x\n    role: member\n"
            "    role: admin\n",
            "line 7: the key 'role' appears twice",
        ),
        ("version: 1\nusers: [\n", "not valid YAML"),
        ("version: 1\nusers: !!python/object/apply:os.system [echo hi]\n", "not valid YAML"),
        ("", "the file is empty"),
    ],
)
def test_unsafe_or_broken_yaml_is_refused(tmp_path, text, expected):
    with pytest.raises(CommandError) as refused:
        run(write(tmp_path, text))
    assert expected in str(refused.value)
    assert [e.action for e in events_after(0)] == ["policy.refused"]


def test_a_user_of_another_organization_is_not_taken_over(tmp_path):
    run(EXAMPLE)
    other = {
        "version": 1,
        "organizations": [{"slug": "elsewhere", "name": "Elsewhere"}],
        "users": [{"username": "alice", "role": "admin"}],
    }
    with pytest.raises(CommandError, match=r"users\[0\]\.username: alice already exists outside"):
        run(write(tmp_path, other, "other.yaml"))
    assert User.objects.get(username="alice").role == "member"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_set("agents", 2, "kind", "interactive"), "agents[2].kind: the agent is background"),
        (
            _set("agents", 0, "status", "pending"),
            "agents[0].status: the agent is active; it cannot become pending",
        ),
        (_set("users", 4, "active", True), None),
    ],
)
def test_lifecycle_rules_hold_on_existing_objects(tmp_path, mutate, expected):
    run(EXAMPLE)
    document = clinic()
    mutate(document)
    if expected is None:  # active: true on an active user is no change
        assert run(write(tmp_path, document)).strip() == "no changes"
        return
    with pytest.raises(CommandError) as refused:
        run(write(tmp_path, document))
    assert expected in str(refused.value)


def test_retired_agents_stay_retired_and_hold_no_grants(tmp_path):
    run(EXAMPLE)
    document = clinic()
    document["agents"][2]["status"] = "retired"
    with pytest.raises(CommandError, match=r"grants\[8\]: agent billing-runner is retired"):
        run(write(tmp_path, document))
    document["grants"] = [g for g in document["grants"] if g["agent"] != "billing-runner"]
    run(write(tmp_path, document))
    assert not Grant.objects.filter(agent__name="billing-runner", revoked_at__isnull=True).exists()

    document["agents"][2]["status"] = "active"
    with pytest.raises(CommandError, match=r"agents\[2\]\.status: the agent is retired"):
        run(write(tmp_path, document))


def test_deactivated_users_are_not_reactivated_by_a_file(tmp_path):
    run(EXAMPLE)
    document = clinic()
    document["users"][6]["active"] = False
    before = head()
    run(write(tmp_path, document))
    assert [e.action for e in events_after(before)] == ["user.deactivated", "policy.applied"]
    with pytest.raises(CommandError, match=r"users\[6\]\.active: carol is deactivated"):
        run(EXAMPLE)


# Export ---


def _renamed(document: dict, suffix: str) -> dict:
    """The same policy for a copy of the organization: every globally unique name gets a suffix."""
    text = yaml.safe_dump(document, sort_keys=False)
    document = yaml.safe_load(text)
    document["organizations"][0]["slug"] += suffix
    users = {u["username"] for u in document["users"]}
    for user in document["users"]:
        user["username"] += suffix
    for agent in document["agents"]:
        agent["owner"] += suffix
    for client in [*document["agents"], *document["tool_servers"]]:
        if "client_id" in client:
            client["client_id"] += suffix
    for grant in document["grants"]:
        if grant.get("user") in users:
            grant["user"] += suffix
    for server in document["tool_servers"]:
        server["audience"] = server["audience"].replace(".example", f"{suffix}.example")
    return document


def test_export_then_apply_reproduces_the_state(tmp_path):
    run(EXAMPLE)
    extra = clinic()
    extra["users"].append({"username": "gone", "role": "member", "active": False})
    extra["agents"][1]["status"] = "suspended"
    extra["agents"][1]["status_reason"] = "under review"
    extra["agents"].append({"name": "newcomer", "kind": "background", "owner": "dana", "status": "pending"})
    extra["grants"][0]["expires_at"] = (timezone.now() + timedelta(days=3)).isoformat()
    extra["grants"][7]["revoked"] = True
    run(write(tmp_path, extra))
    clinic_org = Organization.objects.get(slug="clinic")
    exported = export_policy(organizations=[clinic_org])

    # Re-applying the export to the same database changes nothing.
    before = head()
    assert run(write(tmp_path, exported, "export.yaml")).strip() == "no changes"
    assert head() == before
    assert "prescriptions.request" not in [g["capability"] for g in exported["grants"]]

    # Applying it to a fresh organization reproduces it.
    run(write(tmp_path, _renamed(exported, "-copy"), "copy.yaml"))
    copy_export = export_policy(organizations=[Organization.objects.get(slug="clinic-copy")])
    assert copy_export == _renamed(exported, "-copy")
    assert Agent.objects.get(name="support-assistant", organization__slug="clinic-copy").status == "suspended"
    assert not User.objects.get(username="gone-copy").is_active


def test_export_of_several_organizations_names_them_on_each_entry(tmp_path):
    run(EXAMPLE)
    run(
        write(
            tmp_path,
            {
                "version": 1,
                "organizations": [{"slug": "lab", "name": "Lab"}],
                "users": [{"username": "lee", "role": "admin"}],
            },
            "lab.yaml",
        )
    )
    exported = export_policy()
    assert [o["slug"] for o in exported["organizations"]] == ["clinic", "lab"]
    assert {u["organization"] for u in exported["users"]} == {"clinic", "lab"}
    assert run(write(tmp_path, exported, "all.yaml")).strip() == "no changes"


def test_export_command_writes_yaml_for_one_organization(tmp_path):
    run(EXAMPLE)
    out = io.StringIO()
    call_command("policy", "export", "--organization", "clinic", stdout=out)
    document = yaml.safe_load(out.getvalue())
    assert document["organizations"] == [{"slug": "clinic", "name": "Riverside Clinic"}]
    with pytest.raises(CommandError, match="no organization 'nowhere'"):
        call_command("policy", "export", "--organization", "nowhere", stdout=io.StringIO())


# Exit codes, as a shell sees them ---


def test_command_error_carries_the_exit_code(tmp_path):
    document = clinic()
    document["grants"][0]["user"] = "mallory"
    with pytest.raises(CommandError) as refused:
        run(write(tmp_path, document))
    with pytest.raises(CommandError) as missing:
        run(tmp_path / "missing.yaml")
    assert (refused.value.returncode, missing.value.returncode) == (1, 2)


def test_manage_py_exit_codes(tmp_path):
    """The real command line on its own SQLite database, as `make run` calls it."""
    env = {**os.environ, "DEBUG": "1", "GATEHOUSE_VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": ""}
    manage = [sys.executable, str(ROOT / "manage.py")]

    def shell(*args):
        return subprocess.run(
            [*manage, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
        )

    test_db = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite" and Path(str(test_db)).is_file():
        # Copy the migrated (committed, empty) test database rather than migrating again.
        (tmp_path / "var").mkdir()
        with (
            sqlite3.connect(test_db) as source,
            sqlite3.connect(tmp_path / "var" / "gatehouse.sqlite3") as target,
        ):
            source.backup(target)
    else:
        assert shell("migrate", "--noinput", "-v0").returncode == 0
    first, second = shell("policy", "apply", str(EXAMPLE)), shell("policy", "apply", str(EXAMPLE))
    assert (first.returncode, second.returncode) == (0, 0)
    assert second.stdout.strip() == "no changes"
    document = clinic()
    document["agents"][0]["ceiling"][1] = "records.delete_all"
    refused = shell("policy", "apply", str(write(tmp_path, document)))
    assert refused.returncode == 1
    assert "clinic.yaml: agents[0].ceiling[1]: no capability records.delete_all" in refused.stderr
    assert shell("policy", "apply", str(tmp_path / "missing.yaml")).returncode == 2
