import importlib
from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test import override_settings

from audit import chain
from audit.masking import MASK
from audit.models import AuditEvent
from audit.services import Actor, chain_lanes, record
from audit.verify import verify_chain
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PEM = (
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGl0J3Mgbm90IGEgcmVhbCBrZXkgYXQgYWxsISEhIQ==\n"
    "-----END PRIVATE KEY-----"
)
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwYXQifQ.c2lnbmF0dXJl"


def test_record_snapshots_actor_agent_user_and_target(admin, agent, member, capability):
    event = record(
        action="grant.created",
        actor=admin,
        agent=agent,
        on_behalf_of=member,
        target=capability,
        capabilities=["records.read_own", "records.read_own"],
        parameters={"reason": "care", "patient_id": 42},
    )
    stored = AuditEvent.objects.get(seq=event.seq)
    assert (stored.actor_type, stored.actor_id, stored.actor_label) == ("user", str(admin.pk), "admin")
    assert (stored.agent_id, stored.agent_label) == (agent.pk, "voice")
    assert (stored.on_behalf_of_id, stored.on_behalf_of_label) == (member.pk, "pat")
    assert (stored.target_type, stored.target_id) == ("governance.capability", str(capability.pk))
    assert stored.organization_id == agent.organization_id
    assert stored.capabilities == "records.read_own"
    assert stored.parameters_dict == {"reason": "care", "patient_id": 42}
    assert stored.hash == event.hash and len(stored.hash) == 64


def test_event_outlives_the_user_it_names(org):
    user = UserFactory(organization=org, username="leaver")
    user_pk = user.pk
    event = record(action="user.deactivated", actor=user, target=user)
    user.delete()
    stored = AuditEvent.objects.get(seq=event.seq)
    assert (stored.actor_id, stored.actor_label) == (str(user_pk), "leaver")
    assert stored.target_label == "leaver"
    assert verify_chain().ok


def test_events_of_one_transaction_link_into_one_lane():
    first = record(action="policy.applied", actor=Actor(type="system", label="cli"))
    second = record(action="policy.applied", actor=Actor(type="system", label="cli"))
    assert second.lane == first.lane
    assert (first.lane_seq, second.lane_seq) == (1, 2)
    assert first.prev_hash == chain.genesis_hash(first.lane)
    assert second.prev_hash == first.hash
    assert second.seq > first.seq
    values = tuple(getattr(AuditEvent.objects.get(seq=second.seq), name) for name in chain.FIELDS)
    assert chain.event_hash(values) == second.hash


def test_genesis_differs_per_lane():
    assert len({chain.genesis_hash(lane) for lane in range(chain.MAX_LANES)}) == chain.MAX_LANES


@pytest.mark.parametrize("lanes", [0, chain.MAX_LANES + 1, "8"])
def test_lane_count_outside_its_range_is_refused(settings, lanes):
    settings.AUDIT_CHAIN_LANES = lanes
    with pytest.raises(ImproperlyConfigured, match="AUDIT_CHAIN_LANES"):
        chain_lanes()


def test_secrets_are_masked_and_identifiers_kept():
    parameters = {
        "password": "correct horse battery staple",
        "client_secret": "s3cr3t-value",
        "refresh_token": "opaque-refresh-value",
        "code_verifier": "verifier-value",
        "nested": {"access_token": "opaque", "authorization": "Bearer abcdefghijklmnop"},
        "note": f"token was {JWT}",
        "pem": PEM,
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "public-x", "d": "private-d"},
        "rsa": {"kty": "RSA", "n": "mod", "e": "AQAB", "p": "1", "q": "2", "dp": "3", "dq": "4", "qi": "5"},
        "oct": {"kty": "oct", "k": "symmetric"},
        "grant_id": 17,
        "jti": "a1b2c3",
        "token_type": "Bearer",
        "client_id": "agent-voice",
        "scope": "records.read_own",
    }
    event = record(action="token.issued", actor=Actor(type="system"), parameters=parameters)
    stored = AuditEvent.objects.get(seq=event.seq).parameters_dict
    for key in ("password", "client_secret", "refresh_token", "code_verifier", "note", "pem"):
        assert stored[key] == MASK, key
    assert stored["nested"] == {"access_token": MASK, "authorization": MASK}
    assert stored["jwk"] == {"kty": "OKP", "crv": "Ed25519", "x": "public-x", "d": MASK}
    assert {k: v for k, v in stored["rsa"].items() if v != MASK} == {"kty": "RSA", "n": "mod", "e": "AQAB"}
    assert len(stored["rsa"]) == 8
    assert stored["oct"]["k"] == MASK
    assert stored["grant_id"] == 17
    assert stored["jti"] == "a1b2c3"
    assert stored["token_type"] == "Bearer"
    assert stored["client_id"] == "agent-voice"
    assert stored["scope"] == "records.read_own"
    raw = AuditEvent.objects.get(seq=event.seq).parameters
    for secret in ("horse", "s3cr3t", "opaque", "private-d", "symmetric", "abcdefghijklmnop", "MC4CAQ", JWT):
        assert secret not in raw


def test_labels_are_masked_and_bounded():
    actor = Actor(type="system", id="x" * 100, label=JWT)
    event = record(action="policy.applied", actor=actor, capabilities=["y" * 400])
    stored = AuditEvent.objects.get(seq=event.seq)
    assert stored.actor_label == MASK
    assert len(stored.actor_id) <= 64
    assert verify_chain().ok


def test_hostile_strings_are_stored_and_verifiable():
    """Lone surrogates (what json.loads makes of "\\ud800") and control characters cannot break the write."""
    event = record(
        action="decision.denied",
        actor=Actor(type="agent", label="bad\ud800agent\x00"),
        parameters={"text": '\udfff\x07 ünïcødé ✓ "quoted" \\ back'},
    )
    stored = AuditEvent.objects.get(seq=event.seq)
    assert "\ud800" not in stored.actor_label and "\x00" not in stored.actor_label
    assert "ünïcødé ✓" in stored.parameters_dict["text"]
    assert verify_chain().ok


def test_rolled_back_transaction_leaves_no_event():
    before = AuditEvent.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = record(action="grant.created", actor=Actor(type="system"))
        raise RuntimeError("the change failed")
    assert AuditEvent.objects.count() == before
    after = record(action="grant.created", actor=Actor(type="system"))
    assert (after.lane, after.lane_seq) == (rolled_back.lane, rolled_back.lane_seq)  # the position is reused
    assert after.seq >= rolled_back.seq  # the global seq may have a gap
    assert verify_chain().ok


def test_migration_0005_refuses_a_database_with_old_audit_rows():
    migration = importlib.import_module("audit.migrations.0005_lanes")
    editor = SimpleNamespace(connection=connection)
    migration.refuse_existing_rows(None, editor)  # empty: nothing to refuse
    record(action="grant.created", actor=Actor(type="system"))
    with pytest.raises(RuntimeError, match=r"will not rehash the 1 audit event\(s\) and 0 checkpoint"):
        migration.refuse_existing_rows(None, editor)


def test_unknown_actor_kind_is_refused():
    with pytest.raises(TypeError):
        record(action="grant.created", actor=object())
    with pytest.raises(ValueError):
        record(action="no.such_action", actor=Actor(type="system"))


@override_settings(ROOT_URLCONF="tests.audit.urls")
def test_request_id_and_client_ip_come_from_the_request(client):
    response = client.get(
        "/record/",
        HTTP_X_REQUEST_ID="req-12345678",
        REMOTE_ADDR="203.0.113.7",
        HTTP_X_FORWARDED_FOR="198.51.100.99",
    )
    assert response.status_code == 200
    assert response["X-Request-ID"] == "req-12345678"
    event = AuditEvent.objects.get(seq=response.json()["seq"])
    assert event.request_id == "req-12345678"
    assert event.client_ip == "203.0.113.7"  # X-Forwarded-For ignored: no trusted proxy configured


@override_settings(ROOT_URLCONF="tests.audit.urls", GATEHOUSE_TRUSTED_PROXY_COUNT=1)
def test_forwarded_for_is_read_through_trusted_proxies_only(client):
    response = client.get("/record/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.20")
    event = AuditEvent.objects.get(seq=response.json()["seq"])
    assert event.client_ip == "198.51.100.20"  # the hop the proxy saw, not the client-written first entry


@override_settings(ROOT_URLCONF="tests.audit.urls")
def test_bad_request_id_is_replaced_and_mapped_ipv6_is_verifiable(client):
    response = client.get("/record/", HTTP_X_REQUEST_ID="<script>", REMOTE_ADDR="::ffff:192.0.2.1")
    event = AuditEvent.objects.get(seq=response.json()["seq"])
    assert event.request_id != "<script>" and len(event.request_id) == 32
    assert event.client_ip == "192.0.2.1"
    client.get("/record/", REMOTE_ADDR="::1.2.3.4")  # PostgreSQL prints this one in mixed notation
    client.get("/record/", REMOTE_ADDR="2001:DB8::1")
    assert verify_chain().ok


def test_outside_a_request_there_is_no_request_context():
    event = record(action="policy.applied", actor=Actor(type="system"))
    assert (event.request_id, event.client_ip) == ("", None)
