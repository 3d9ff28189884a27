"""Governance services: one audit event per change, nothing written on refusal, tokens revoked for real."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone
from jwcrypto import jwk
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_refresh_token_model,
    set_token_value,
)
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import Request

from audit.models import AuditEvent
from audit.services import SYSTEM
from governance import services
from governance.errors import Conflict, InvalidInput, InvalidState, NotPermitted
from governance.models import Agent, Capability, Grant, Organization, ToolServer, User
from tests.factories import AdminFactory, CapabilityFactory, UserFactory

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
AuthorizationCode = get_grant_model()
Application = get_application_model()


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


@pytest.fixture
def c(org, other_org, admin, member, tool_server, capability, agent, background_agent):
    return SimpleNamespace(
        org=org,
        other_org=other_org,
        admin=admin,
        member=member,
        server=tool_server,
        cap=capability,
        cap2=CapabilityFactory(tool_server=tool_server, key="records.write_own"),
        agent=agent,
        background=background_agent,
    )


# ---------------------------------------------------------------------------------------------- helpers


def superuser(**fields) -> User:
    return UserFactory(is_superuser=True, is_staff=True, role="admin", **fields)


def last_seq() -> int:
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def events_since(seq: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(seq__gt=seq).order_by("seq"))


MODELS = [
    Organization,
    User,
    Agent,
    ToolServer,
    Capability,
    Grant,
    AuditEvent,
    Application,
    AccessToken,
    RefreshToken,
    AuthorizationCode,
]


def snapshot() -> dict:
    """Every row of every table a service writes (ceiling included), for before/after comparison."""
    state = {m.__name__: list(m.objects.order_by("pk").values()) for m in MODELS}
    state["ceiling"] = list(Agent.ceiling.through.objects.order_by("pk").values())
    return state


def issue_tokens(application, user, scope: str) -> SimpleNamespace:
    """Tokens as DOT stores them (hashed at rest under COMPLIANT_BCP_RFC9700_TOKEN_STORAGE)."""
    raw_access, raw_refresh = secrets.token_urlsafe(30), secrets.token_urlsafe(30)
    access = AccessToken(
        user=user, application=application, scope=scope, expires=timezone.now() + timedelta(minutes=5)
    )
    set_token_value(access, raw_access)
    access.save()
    refresh = RefreshToken(user=user, application=application, access_token=access, token_family=uuid.uuid4())
    set_token_value(refresh, raw_refresh)
    refresh.save()
    code = AuthorizationCode.objects.create(
        user=user,
        application=application,
        code=secrets.token_urlsafe(20),
        scope=scope,
        expires=timezone.now() + timedelta(minutes=1),
        redirect_uri="https://agent.example.test/callback",
        code_challenge="x" * 43,
        code_challenge_method="S256",
    )
    return SimpleNamespace(
        raw_access=raw_access, raw_refresh=raw_refresh, access=access, refresh=refresh, code=code
    )


def token_works(raw: str) -> bool:
    """Ask DOT itself whether the bearer token is still usable."""
    return OAuth2Validator().validate_bearer_token(raw, [], Request("https://records.example.test/mcp"))


def refresh_live(tokens) -> bool:
    return RefreshToken.objects.filter(pk=tokens.refresh.pk, revoked__isnull=True).exists()


def public_jwk(**params) -> dict:
    return json.loads(jwk.JWK.generate(**params).export_public())


def private_jwk(**params) -> dict:
    return json.loads(jwk.JWK.generate(**params).export_private())


# ------------------------------------------------------------------- one event per change, right fields


def _expected(action, *, actor, target, agent=None, on_behalf_of=None, capabilities=()):
    return {
        "action": action,
        "actor_id": str(actor.pk) if hasattr(actor, "pk") else "",
        "agent_id": getattr(agent, "pk", None),
        "on_behalf_of_id": getattr(on_behalf_of, "pk", None),
        "target": (target._meta.label_lower, str(target.pk)),
        "capabilities": " ".join(sorted(capabilities)),
    }


def _organization_create(c):
    org = services.organization_create(actor=SYSTEM, slug="north", name="North clinic")
    return _expected("organization.created", actor=SYSTEM, target=org)


def _organization_update(c):
    services.organization_update(actor=c.admin, organization=c.org, name="Clinic (renamed)")
    return _expected("organization.updated", actor=c.admin, target=c.org)


def _user_create(c):
    user = services.user_create(
        actor=c.admin, organization=c.org, username="nurse", password="a long secret pw 1"
    )
    return _expected("user.created", actor=c.admin, target=user) | {"secret": "a long secret pw 1"}


def _user_update_role(c):
    services.user_update(actor=c.admin, user=c.member, role="approver")
    return _expected("user.role_changed", actor=c.admin, target=c.member)


def _user_update_profile(c):
    services.user_update(actor=c.admin, user=c.member, email="pat@clinic.example")
    return _expected("user.updated", actor=c.admin, target=c.member)


def _user_deactivate(c):
    tokens = issue_tokens(c.agent.application, c.member, "records.read_own")
    services.user_deactivate(actor=c.admin, user=c.member, reason="left")
    assert not token_works(tokens.raw_access) and not refresh_live(tokens)
    return _expected("user.deactivated", actor=c.admin, target=c.member) | {"secret": tokens.raw_access}


def _tool_server_create(c):
    server = services.tool_server_create(
        actor=c.admin, organization=c.org, name="Calendar", audience="https://calendar.example.test/mcp"
    )
    return _expected("tool_server.created", actor=c.admin, target=server)


def _tool_server_update(c):
    services.tool_server_update(actor=c.admin, tool_server=c.server, description="Patient records")
    return _expected("tool_server.updated", actor=c.admin, target=c.server)


def _capability_create(c):
    cap = services.capability_create(
        actor=c.admin,
        tool_server=c.server,
        key="appointments.cancel",
        requires_approval=True,
        approvals_required=2,
    )
    return _expected("capability.created", actor=c.admin, target=cap, capabilities=["appointments.cancel"])


def _capability_update(c):
    services.capability_update(actor=c.admin, capability=c.cap, risk_level="high")
    return _expected("capability.updated", actor=c.admin, target=c.cap, capabilities=[c.cap.key])


def _agent_create(c):
    agent = services.agent_create(
        actor=c.admin,
        organization=c.org,
        name="scheduler",
        kind="interactive",
        owner=c.admin,
        ceiling=[c.cap],
        jwks={"keys": [public_jwk(kty="EC", crv="P-256")]},
        redirect_uris=["https://scheduler.example.test/callback"],
    )
    return _expected("agent.created", actor=c.admin, target=agent, agent=agent, capabilities=[c.cap.key]) | {
        "secret": agent.application.client_secret
    }


def _agent_update(c):
    services.agent_update(actor=c.admin, agent=c.agent, description="Answers the phone")
    return _expected("agent.updated", actor=c.admin, target=c.agent, agent=c.agent)


def _agent_update_keys(c):
    key = public_jwk(kty="OKP", crv="Ed25519")
    services.agent_update(actor=c.admin, agent=c.agent, jwks={"keys": [key]})
    return _expected("agent.keys_changed", actor=c.admin, target=c.agent, agent=c.agent) | {
        "secret": key["x"]
    }


def _agent_set_ceiling(c):
    services.agent_set_ceiling(actor=c.admin, agent=c.agent, capabilities=[c.cap, c.cap2])
    return _expected(
        "agent.ceiling_changed", actor=c.admin, target=c.agent, agent=c.agent, capabilities=[c.cap2.key]
    )


def _agent_activate(c):
    Agent.objects.filter(pk=c.agent.pk).update(status="pending")
    services.agent_activate(actor=c.admin, agent=c.agent)
    return _expected("agent.activated", actor=c.admin, target=c.agent, agent=c.agent)


def _agent_suspend(c):
    tokens = issue_tokens(c.agent.application, c.member, "records.read_own")
    services.agent_suspend(actor=c.admin, agent=c.agent, reason="odd behaviour")
    return _expected("agent.suspended", actor=c.admin, target=c.agent, agent=c.agent) | {
        "secret": tokens.raw_access,
        "secret2": tokens.raw_refresh,
    }


def _agent_reactivate(c):
    Agent.objects.filter(pk=c.agent.pk).update(status="suspended")
    services.agent_reactivate(actor=c.admin, agent=c.agent, reason="fixed")
    return _expected("agent.reactivated", actor=c.admin, target=c.agent, agent=c.agent)


def _agent_retire(c):
    services.agent_retire(actor=c.admin, agent=c.agent, reason="replaced")
    return _expected("agent.retired", actor=c.admin, target=c.agent, agent=c.agent)


def _grant_create(c):
    grant = services.grant_create(
        actor=c.admin, agent=c.agent, capability=c.cap, user=c.member, reason="care"
    )
    return _expected(
        "grant.created",
        actor=c.admin,
        target=grant,
        agent=c.agent,
        on_behalf_of=c.member,
        capabilities=[c.cap.key],
    )


def _grant_create_service(c):
    grant = services.grant_create(actor=c.admin, agent=c.background, capability=c.cap)
    return _expected(
        "grant.created", actor=c.admin, target=grant, agent=c.background, capabilities=[c.cap.key]
    )


def _grant_renew(c):
    grant = Grant.objects.create(organization=c.org, agent=c.agent, capability=c.cap, user=c.member)
    services.grant_renew(actor=c.admin, grant=grant, expires_at=timezone.now() + timedelta(days=30))
    return _expected(
        "grant.renewed",
        actor=c.admin,
        target=grant,
        agent=c.agent,
        on_behalf_of=c.member,
        capabilities=[c.cap.key],
    )


def _grant_revoke(c):
    grant = Grant.objects.create(organization=c.org, agent=c.agent, capability=c.cap, user=c.member)
    tokens = issue_tokens(c.agent.application, c.member, "records.read_own")
    services.grant_revoke(actor=c.admin, grant=grant, reason="no longer needed")
    return _expected(
        "grant.revoked",
        actor=c.admin,
        target=grant,
        agent=c.agent,
        on_behalf_of=c.member,
        capabilities=[c.cap.key],
    ) | {"secret": tokens.raw_access}


CHANGES = [
    _organization_create,
    _organization_update,
    _user_create,
    _user_update_role,
    _user_update_profile,
    _user_deactivate,
    _tool_server_create,
    _tool_server_update,
    _capability_create,
    _capability_update,
    _agent_create,
    _agent_update,
    _agent_update_keys,
    _agent_set_ceiling,
    _agent_activate,
    _agent_suspend,
    _agent_reactivate,
    _agent_retire,
    _grant_create,
    _grant_create_service,
    _grant_renew,
    _grant_revoke,
]


@pytest.mark.parametrize("change", CHANGES, ids=[f.__name__.lstrip("_") for f in CHANGES])
def test_each_service_writes_exactly_one_event(c, change):
    before = last_seq()
    expected = change(c)
    events = events_since(before)
    assert len(events) == 1, [e.action for e in events]
    event = events[0]
    assert event.action == expected["action"]
    assert event.actor_id == expected["actor_id"]
    assert event.agent_id == expected["agent_id"]
    assert event.on_behalf_of_id == expected["on_behalf_of_id"]
    assert (event.target_type, event.target_id) == expected["target"]
    assert event.capabilities == expected["capabilities"]
    stored = json.dumps([getattr(event, f.attname) for f in AuditEvent._meta.fields], default=str)
    for name in ("secret", "secret2"):
        if expected.get(name):
            assert expected[name] not in stored


def test_agent_create_event_names_keys_not_key_material(c):
    key = public_jwk(kty="EC", crv="P-256")
    key["kid"] = "k1"
    before = last_seq()
    services.agent_create(
        actor=c.admin, organization=c.org, name="k", kind="background", owner=c.admin, jwks={"keys": [key]}
    )
    parameters = events_since(before)[0].parameters_dict
    assert parameters["key_ids"] == ["k1"]
    assert key["x"] not in json.dumps(parameters)


# --------------------------------------------------------------- refusals leave no change and no event


def _stale_foreign_capability(c):
    foreign = CapabilityFactory(tool_server__organization=c.other_org, key="records.read_all")
    foreign.tool_server.organization_id = (
        c.org.pk
    )  # what a stale object could claim; the database knows better
    return foreign


def _grant(c, user=None, capability=None):
    return services.grant_create(
        actor=c.admin, agent=c.agent, capability=capability or c.cap, user=user or c.member
    )


def _deactivate(c):
    User.objects.filter(pk=c.member.pk).update(is_active=False)
    c.member.refresh_from_db()


def _stale(c):
    c.stale = _stale_foreign_capability(c)


def _move_member_away(c):
    User.objects.filter(pk=c.member.pk).update(organization=c.other_org)  # c.member still says c.org


def _foreign_owner(c):
    c.foreign_owner = UserFactory(organization=c.other_org)


# name: (expected error, setup or None, the refused call).  Setup runs before the "before" snapshot.
REFUSALS = {
    "grant outside the ceiling": (InvalidInput, None, lambda c: _grant(c, capability=c.cap2)),
    "grant for a deactivated user": (InvalidState, _deactivate, _grant),
    "duplicate open grant": (Conflict, _grant, _grant),
    "ceiling removal under an open grant": (
        Conflict,
        _grant,
        lambda c: services.agent_set_ceiling(actor=c.admin, agent=c.agent, capabilities=[]),
    ),
    "trigger fires mid-transaction: ceiling swap with a foreign capability": (
        Conflict,
        _stale,
        lambda c: services.agent_set_ceiling(actor=c.admin, agent=c.agent, capabilities=[c.cap2, c.stale]),
    ),
    "trigger fires mid-transaction: grant to a user who moved away": (Conflict, _move_member_away, _grant),
    "invalid capability key": (
        InvalidInput,
        None,
        lambda c: services.capability_create(actor=c.admin, tool_server=c.server, key="a.b\n"),
    ),
    "unknown role": (
        InvalidInput,
        None,
        lambda c: services.user_update(actor=c.admin, user=c.member, role="owner"),
    ),
    "background agent with redirect URIs": (
        InvalidInput,
        None,
        lambda c: services.agent_update(
            actor=c.admin, agent=c.background, description="new", redirect_uris=["https://x.example.test/cb"]
        ),
    ),
    "redirect URI with a disallowed scheme": (
        InvalidInput,
        None,
        lambda c: services.agent_create(
            actor=c.admin,
            organization=c.org,
            name="n",
            kind="interactive",
            owner=c.admin,
            redirect_uris=["ftp://x.example.test/cb"],
        ),
    ),
    "owner from another organization": (
        InvalidInput,
        _foreign_owner,
        lambda c: services.agent_update(actor=c.admin, agent=c.agent, name="renamed", owner=c.foreign_owner),
    ),
    "bad constraint operand": (
        InvalidInput,
        None,
        lambda c: services.capability_update(
            actor=c.admin, capability=c.cap, constraints={"patient_id": {"pattern": "("}}
        ),
    ),
    "retired agent suspended": (
        InvalidState,
        lambda c: services.agent_retire(actor=c.admin, agent=c.agent, reason="gone"),
        lambda c: services.agent_suspend(actor=c.admin, agent=c.agent, reason="again"),
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_a_refused_change_writes_nothing(c, name):
    error, setup, attempt = REFUSALS[name]
    if setup:
        setup(c)
    before, seq = snapshot(), last_seq()
    with pytest.raises(error):
        attempt(c)
    assert events_since(seq) == []
    assert snapshot() == before


def test_trigger_mid_transaction_rolls_back_the_earlier_statements(c):
    """agent_set_ceiling removes before it adds: the removal must not survive the refused addition."""
    before, seq = snapshot(), last_seq()
    with pytest.raises(Conflict, match="ceiling cannot hold"):
        services.agent_set_ceiling(actor=c.admin, agent=c.agent, capabilities=[_stale_foreign_capability(c)])
    assert list(c.agent.ceiling.all()) == [c.cap]
    assert events_since(seq) == []
    after = snapshot()
    assert after["ceiling"] == before["ceiling"] and after["Grant"] == before["Grant"]


def test_a_failed_update_leaves_the_callers_object_as_stored(c):
    with pytest.raises(InvalidInput):
        services.agent_update(
            actor=c.admin, agent=c.background, name="renamed", redirect_uris=["https://x.test/cb"]
        )
    assert c.background.name == Agent.objects.get(pk=c.background.pk).name != "renamed"


# ------------------------------------------------------------------------------ no-op updates: nothing

NOOPS = {
    "organization_update": lambda c: services.organization_update(
        actor=c.admin, organization=c.org, name="Clinic"
    ),
    "user_update": lambda c: services.user_update(actor=c.admin, user=c.member, email=c.member.email),
    "user_deactivate twice": lambda c: (
        User.objects.filter(pk=c.member.pk).update(is_active=False),
        c.member.refresh_from_db(),
        services.user_deactivate(actor=c.admin, user=c.member, reason="again"),
    ),
    "tool_server_update": lambda c: services.tool_server_update(
        actor=c.admin, tool_server=c.server, name=c.server.name
    ),
    "capability_update": lambda c: services.capability_update(
        actor=c.admin, capability=c.cap, risk_level="low"
    ),
    "agent_update": lambda c: services.agent_update(
        actor=c.admin,
        agent=c.agent,
        name=c.agent.name,
        redirect_uris=c.agent.application.redirect_uris.split(),
    ),
    "agent_set_ceiling": lambda c: services.agent_set_ceiling(
        actor=c.admin, agent=c.agent, capabilities=[c.cap]
    ),
    "grant_renew same expiry": lambda c: services.grant_renew(
        actor=c.admin,
        grant=Grant.objects.create(organization=c.org, agent=c.agent, capability=c.cap, user=c.member),
        expires_at=None,
    ),
}


@pytest.mark.parametrize("name", list(NOOPS))
def test_no_op_writes_nothing(c, name):
    seq = last_seq()
    NOOPS[name](c)
    assert events_since(seq) == []


# --------------------------------------------------------------------------------------- permissions


@pytest.fixture(params=["admin of another organization", "member", "inactive admin", "anonymous-like agent"])
def outsider(request, c):
    return {
        "admin of another organization": lambda: AdminFactory(organization=c.other_org),
        "member": lambda: c.member,
        "inactive admin": lambda: AdminFactory(organization=c.org, is_active=False),
        "anonymous-like agent": lambda: c.agent,
    }[request.param]()


def _open_grant(c):
    c.grant = Grant.objects.create(organization=c.org, agent=c.agent, capability=c.cap, user=c.member)


def _open_grant_of_someone_else(c):
    """The person a grant names may revoke it (tests/portal); every outsider here is someone else."""
    other = UserFactory(organization=c.org, username="someone-else")
    c.grant = Grant.objects.create(organization=c.org, agent=c.agent, capability=c.cap, user=other)


# name: (setup or None, the call an outsider attempts)
ATTEMPTS = {
    "organization_update": (
        None,
        lambda c, a: services.organization_update(actor=a, organization=c.org, name="M"),
    ),
    "user_create": (
        None,
        lambda c, a: services.user_create(actor=a, organization=c.org, username="mole", role="admin"),
    ),
    "user_update role": (None, lambda c, a: services.user_update(actor=a, user=c.member, role="admin")),
    "user_deactivate": (
        None,
        lambda c, a: services.user_deactivate(actor=a, user=c.admin, reason="takeover"),
    ),
    "tool_server_create": (
        None,
        lambda c, a: services.tool_server_create(
            actor=a, organization=c.org, name="Evil", audience="https://evil.example.test/"
        ),
    ),
    "capability_update": (
        None,
        lambda c, a: services.capability_update(actor=a, capability=c.cap, max_token_lifetime=86400),
    ),
    "agent_create": (
        None,
        lambda c, a: services.agent_create(
            actor=a, organization=c.org, name="rogue", kind="background", owner=c.admin
        ),
    ),
    "agent_update keys": (
        None,
        lambda c, a: services.agent_update(
            actor=a, agent=c.agent, jwks={"keys": [public_jwk(kty="EC", crv="P-256")]}
        ),
    ),
    "agent_set_ceiling": (
        None,
        lambda c, a: services.agent_set_ceiling(actor=a, agent=c.agent, capabilities=[c.cap, c.cap2]),
    ),
    "agent_suspend": (None, lambda c, a: services.agent_suspend(actor=a, agent=c.agent, reason="x")),
    "agent_reactivate": (
        lambda c: Agent.objects.filter(pk=c.agent.pk).update(status="suspended"),
        lambda c, a: services.agent_reactivate(actor=a, agent=c.agent, reason="x"),
    ),
    "grant_create": (
        None,
        lambda c, a: services.grant_create(actor=a, agent=c.agent, capability=c.cap, user=c.member),
    ),
    "grant_renew": (
        _open_grant,
        lambda c, a: services.grant_renew(actor=a, grant=c.grant, expires_at=None, reason="forever"),
    ),
    "grant_revoke": (
        _open_grant_of_someone_else,
        lambda c, a: services.grant_revoke(actor=a, grant=c.grant, reason="x"),
    ),
}


@pytest.mark.parametrize("name", list(ATTEMPTS))
def test_outsiders_are_refused_and_nothing_is_written(c, outsider, name):
    setup, attempt = ATTEMPTS[name]
    if setup:
        setup(c)
    if name == "grant_renew":
        Grant.objects.filter(pk=c.grant.pk).update(expires_at=timezone.now() + timedelta(days=1))
    before, seq = snapshot(), last_seq()
    with pytest.raises(NotPermitted):
        attempt(c, outsider)
    assert events_since(seq) == []
    assert snapshot() == before


def test_an_admin_cannot_change_or_deactivate_a_superuser(c):
    root = superuser(organization=c.org)
    for attempt in (
        lambda: services.user_update(actor=c.admin, user=root, role="member"),
        lambda: services.user_deactivate(actor=c.admin, user=root, reason="x"),
    ):
        with pytest.raises(NotPermitted):
            attempt()
    root.refresh_from_db()
    assert root.is_active and root.role == "admin"


def test_organization_create_is_for_superusers_and_the_system(c):
    with pytest.raises(NotPermitted):
        services.organization_create(actor=c.admin, slug="mine", name="Mine")
    assert services.organization_create(actor=superuser(organization=None), slug="ok", name="OK").pk


# -------------------------------------------------------------------------- tokens in DOT's own tables


def test_tokens_are_stored_hashed_as_dot_does(c):
    tokens = issue_tokens(c.agent.application, c.member, "records.read_own")
    stored = AccessToken.objects.get(pk=tokens.access.pk)
    assert (
        stored.token == "" and stored.token_checksum == hashlib.sha256(tokens.raw_access.encode()).hexdigest()
    )
    assert token_works(tokens.raw_access)


def test_suspension_revokes_the_agents_tokens_and_only_those(c):
    mine = issue_tokens(c.agent.application, c.member, "records.read_own")
    mine_too = issue_tokens(c.agent.application, c.admin, "records.read_own records.write_own")
    others = issue_tokens(c.background.application, c.admin, "records.read_own")
    assert token_works(mine.raw_access) and token_works(others.raw_access)

    services.agent_suspend(actor=c.admin, agent=c.agent, reason="prompt injection suspected")

    for tokens in (mine, mine_too):
        assert not token_works(tokens.raw_access)
        assert not AccessToken.objects.filter(pk=tokens.access.pk).exists()
        assert not refresh_live(tokens)
        assert not AuthorizationCode.objects.filter(pk=tokens.code.pk).exists()
    assert token_works(others.raw_access) and refresh_live(others)
    assert AuthorizationCode.objects.filter(pk=others.code.pk).exists()
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.parameters_dict["revoked"] == {"access": 2, "refresh": 2, "codes": 2}
    c.agent.refresh_from_db()
    assert c.agent.status == "suspended"


def test_retirement_revokes_tokens_and_closes_grants(c):
    grant = services.grant_create(actor=c.admin, agent=c.agent, capability=c.cap, user=c.member)
    service_grant = services.grant_create(actor=c.admin, agent=c.background, capability=c.cap)
    tokens = issue_tokens(c.agent.application, c.member, "records.read_own")

    services.agent_retire(actor=c.admin, agent=c.agent, reason="replaced")

    grant.refresh_from_db()
    service_grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.revoked_by == c.admin
    assert service_grant.revoked_at is None
    assert not token_works(tokens.raw_access) and not refresh_live(tokens)
    assert AuditEvent.objects.order_by("-seq").first().parameters_dict["grants_revoked"] == 1
    with pytest.raises(InvalidState):
        services.grant_create(actor=c.admin, agent=c.agent, capability=c.cap, user=c.member)


def test_grant_revoke_revokes_only_that_capability_for_that_user(c):
    services.agent_set_ceiling(actor=c.admin, agent=c.agent, capabilities=[c.cap, c.cap2])
    grant = services.grant_create(actor=c.admin, agent=c.agent, capability=c.cap, user=c.member)
    carrying = issue_tokens(c.agent.application, c.member, "records.read_own records.write_own")
    other_capability = issue_tokens(c.agent.application, c.member, "records.write_own")
    other_user = issue_tokens(c.agent.application, c.admin, "records.read_own")
    other_agent = issue_tokens(c.background.application, c.member, "records.read_own")

    services.grant_revoke(actor=c.admin, grant=grant, reason="consent withdrawn")

    assert not token_works(carrying.raw_access) and not refresh_live(carrying)
    assert not AuthorizationCode.objects.filter(pk=carrying.code.pk).exists()
    for kept in (other_capability, other_user, other_agent):
        assert token_works(kept.raw_access) and refresh_live(kept)
        assert AuthorizationCode.objects.filter(pk=kept.code.pk).exists()


def test_user_deactivation_revokes_the_users_tokens_at_every_client(c):
    at_agent = issue_tokens(c.agent.application, c.member, "records.read_own")
    at_other_client = issue_tokens(
        Application.objects.create(
            name="portal",
            client_type="confidential",
            authorization_grant_type="authorization-code",
            redirect_uris="https://portal.example.test/cb",
        ),
        c.member,
        "records.read_own",
    )
    someone_else = issue_tokens(c.agent.application, c.admin, "records.read_own")

    services.user_deactivate(actor=c.admin, user=c.member, reason="left the clinic")

    assert not token_works(at_agent.raw_access) and not token_works(at_other_client.raw_access)
    assert token_works(someone_else.raw_access)


# ---------------------------------------------------------------------------------- lifecycle states

WRONG = [
    ("agent_activate", "active"),
    ("agent_activate", "suspended"),
    ("agent_activate", "retired"),
    ("agent_reactivate", "active"),
    ("agent_reactivate", "pending"),
    ("agent_reactivate", "retired"),
    ("agent_suspend", "suspended"),
    ("agent_suspend", "retired"),
    ("agent_retire", "retired"),
]


@pytest.mark.parametrize(("service", "status"), WRONG)
def test_lifecycle_transitions_refused_from_wrong_states(c, service, status):
    Agent.objects.filter(pk=c.agent.pk).update(status=status)
    seq = last_seq()
    with pytest.raises(InvalidState):
        getattr(services, service)(actor=c.admin, agent=c.agent, reason="try")
    assert Agent.objects.get(pk=c.agent.pk).status == status
    assert events_since(seq) == []


def test_grant_renew_and_revoke_refuse_a_revoked_grant(c):
    grant = services.grant_create(actor=c.admin, agent=c.agent, capability=c.cap, user=c.member)
    services.grant_revoke(actor=c.admin, grant=grant, reason="done")
    seq = last_seq()
    with pytest.raises(InvalidState):
        services.grant_renew(actor=c.admin, grant=grant, expires_at=timezone.now() + timedelta(days=1))
    with pytest.raises(InvalidState):
        services.grant_revoke(actor=c.admin, grant=grant, reason="again")
    assert events_since(seq) == []


def test_an_expired_grant_is_superseded_by_a_new_one(c):
    old = Grant.objects.create(organization=c.org, agent=c.agent, capability=c.cap, user=c.member)
    Grant.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    new = services.grant_create(actor=c.admin, agent=c.agent, capability=c.cap, user=c.member)
    old.refresh_from_db()
    assert old.revoked_at is not None and new.is_active()
    assert AuditEvent.objects.order_by("-seq").first().parameters_dict["superseded_grant"] == old.pk


# ------------------------------------------------------------------------------------------------ JWKS

BAD_JWKS = {
    "private EC key": lambda: {"keys": [private_jwk(kty="EC", crv="P-256")]},
    "private OKP key": lambda: {"keys": [private_jwk(kty="OKP", crv="Ed25519")]},
    "private RSA key": lambda: {"keys": [private_jwk(kty="RSA", size=2048)]},
    "symmetric key": lambda: {"keys": [{"kty": "oct", "k": "c2VjcmV0LWtleS1zaGFyZWQtd2l0aC1ub2JvZHk"}]},
    "weak RSA key": lambda: {"keys": [public_jwk(kty="RSA", size=1024)]},
    "key-agreement curve": lambda: {"keys": [public_jwk(kty="OKP", crv="X25519")]},
    "alg none": lambda: {"keys": [public_jwk(kty="EC", crv="P-256") | {"alg": "none"}]},
    "alg HS256": lambda: {"keys": [public_jwk(kty="EC", crv="P-256") | {"alg": "HS256"}]},
    "encryption key": lambda: {"keys": [public_jwk(kty="EC", crv="P-256") | {"use": "enc"}]},
    "duplicate kid": lambda: {
        "keys": [
            public_jwk(kty="EC", crv="P-256") | {"kid": "a"},
            public_jwk(kty="EC", crv="P-256") | {"kid": "a"},
        ]
    },
    "not JSON": lambda: "{keys: nope",
    "no keys list": lambda: {"kty": "EC"},
    "member not an object": lambda: {"keys": ["abc"]},
    "truncated EC key": lambda: {"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA"}]},
    "too many keys": lambda: {"keys": [public_jwk(kty="EC", crv="P-256") for _ in range(11)]},
}


@pytest.mark.parametrize("name", list(BAD_JWKS))
def test_bad_jwks_refused(c, name):
    jwks = BAD_JWKS[name]()
    before, seq = Agent.objects.get(pk=c.agent.pk).jwks, last_seq()
    with pytest.raises(InvalidInput):
        services.agent_update(actor=c.admin, agent=c.agent, jwks=jwks)
    assert Agent.objects.get(pk=c.agent.pk).jwks == before and events_since(seq) == []


@pytest.mark.parametrize(
    "params",
    [
        {"kty": "EC", "crv": "P-256"},
        {"kty": "EC", "crv": "P-384"},
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": "RSA", "size": 2048},
    ],
    ids=["EC P-256", "EC P-384", "OKP Ed25519", "RSA 2048"],
)
def test_public_keys_accepted(c, params):
    key = public_jwk(**params) | {"kid": "k1", "use": "sig"}
    services.agent_update(actor=c.admin, agent=c.agent, jwks=json.dumps({"keys": [key]}))
    stored = Agent.objects.get(pk=c.agent.pk).jwks["keys"]
    assert stored == [key]


@pytest.mark.parametrize(
    ("uri", "accepted"),
    [
        ("https://agent.example.test/new-callback", True),
        ("http://127.0.0.1:8765/callback", True),
        ("http://[::1]:8765/callback", True),
        ("http://agent.example.test/callback", False),
        ("https://agent.example.test/callback#frag", False),
        ("agent.example.test/callback", False),
    ],
)
def test_redirect_uris_outside_debug(c, settings, uri, accepted):
    settings.DEBUG = False
    seq = last_seq()
    if accepted:
        services.agent_update(actor=c.admin, agent=c.agent, redirect_uris=[uri])
        assert Application.objects.get(pk=c.agent.application_id).redirect_uris == uri
        assert [e.action for e in events_since(seq)] == ["agent.updated"]
    else:
        with pytest.raises(InvalidInput):
            services.agent_update(actor=c.admin, agent=c.agent, redirect_uris=[uri])
        assert events_since(seq) == []
