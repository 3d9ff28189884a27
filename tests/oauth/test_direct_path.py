"""The token endpoint's direct path (governance.oauth.direct) answers exactly as DOT's path would.

Every scenario runs twice, with ``GATEHOUSE_TOKEN_DIRECT_PATH`` on and off, and the two runs must store
and answer the same: response, access token row, token record, claims, audit events.  Refusals must come
out the same too (the direct path hands them to DOT before any side effect).
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from audit.models import AuditEvent
from governance.models import TokenRecord
from governance.oauth import direct as direct_path
from governance.oauth import jwt_tokens
from tests.factories import CapabilityFactory
from tests.oauth import dpop_client, helpers

pytestmark = pytest.mark.django_db(transaction=True)

FORM = "application/x-www-form-urlencoded"
RANDOM_CLAIMS = {"jti", "iat", "exp"}


def post(
    client,
    settings,
    agent,
    key,
    *,
    direct,
    scope="records.read_own",
    resource=None,
    path="/oauth/token/",
    assertion=None,
    extra=None,
    headers=None,
    **assertion_kwargs,
):
    settings.GATEHOUSE_TOKEN_DIRECT_PATH = direct
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    if resource is not None:
        data["resource"] = resource
    if assertion is None:
        assertion = helpers.client_assertion(
            key, agent.application.client_id, settings.GATEHOUSE_ISSUER, **assertion_kwargs
        )
    data.update({"client_assertion_type": helpers.ASSERTION_TYPE, "client_assertion": assertion})
    pairs = list(data.items()) + list(extra or [])
    return client.post(path, data=urlencode(pairs), content_type=FORM, headers=headers)


def last_seq() -> int:
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def events_after(seq: int) -> list[dict]:
    rows = AuditEvent.objects.filter(seq__gt=seq).order_by("seq")
    out = []
    for row in rows.values(
        "action",
        "result",
        "actor_type",
        "actor_id",
        "actor_label",
        "organization_id",
        "agent_id",
        "agent_label",
        "on_behalf_of_id",
        "target_type",
        "capabilities",
        "parameters",
    ):
        parameters = json.loads(row.pop("parameters"))
        parameters.pop("jti", None)
        out.append({**row, "parameters": parameters})
    return out


def outcome(response, seq: int) -> dict:
    """What a client and an auditor see of one request, less the values that are random per token."""
    body = response.json()
    result = {
        "status": response.status_code,
        "headers": {
            name: response.get(name) for name in ("Content-Type", "Cache-Control", "Pragma", "DPoP-Nonce")
        },
        "expires_header": response.has_header("Expires"),  # never_cache's; its value is the current second
        "members": list(body),
        "error": body.get("error"),
        "description": body.get("error_description"),
        "events": events_after(seq),
    }
    if response.status_code == 200:
        claims = jwt_tokens.verify(body["access_token"])
        token = get_access_token_model().objects.get(gatehouse_record__jti=claims["jti"])
        record = TokenRecord.objects.get(jti=claims["jti"])
        result["body"] = {k: v for k, v in body.items() if k != "access_token"}
        result["claims"] = {k: v for k, v in claims.items() if k not in RANDOM_CLAIMS}
        result["lifetime"] = claims["exp"] - claims["iat"]
        result["access_token"] = {
            "user_id": token.user_id,
            "source_refresh_token_id": token.source_refresh_token_id,
            "token": token.token,
            "id_token_id": token.id_token_id,
            "application_id": token.application_id,
            "scope": token.scope,
            "resource": token.resource,
            "expires_matches_record": token.expires == record.expires_at,
            "checksum_is_sha256": token.token_checksum
            == hashlib.sha256(body["access_token"].encode()).hexdigest(),
            "created_set": token.created is not None and token.updated is not None,
        }
        result["record"] = {
            "audience": record.audience,
            "tool_server_id": record.tool_server_id,
            "agent_id": record.agent_id,
            "user_id": record.user_id,
            "subject": record.subject,
            "client_id": record.client_id,
            "capabilities": record.capabilities,
            "grant_type": record.grant_type,
            "token_family": record.token_family,
            "act": record.act,
            "cnf_jkt": record.cnf_jkt,
            "acr": record.acr,
            "auth_time": record.auth_time,
            "lifetime": round((record.expires_at - record.issued_at).total_seconds()),
        }
        assert result["record"]["lifetime"] == result["lifetime"] == body["expires_in"]
    return result


@pytest.fixture
def stored_directly(monkeypatch) -> list:
    """Tokens the direct path stored (a spy on its write; the write itself runs)."""
    calls = []
    store = direct_path._store

    def spy(token, issued, application):
        calls.append(issued.jti)
        return store(token, issued, application)

    monkeypatch.setattr(direct_path, "_store", spy)
    return calls


def both_ways(client, settings, agent, key, **kwargs) -> tuple[dict, dict]:
    seq = last_seq()
    direct = outcome(post(client, settings, agent, key, direct=True, **kwargs), seq)
    seq = last_seq()
    general = outcome(post(client, settings, agent, key, direct=False, **kwargs), seq)
    return direct, general


def test_an_issued_token_is_stored_and_answered_the_same_both_ways(client, settings, world, stored_directly):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    helpers.grant(agent, world.write)
    direct, general = both_ways(
        client,
        settings,
        agent,
        key,
        scope="records.read_own records.write_own records.read_own",
        resource=world.records.audience,
    )
    assert direct["status"] == 200, direct
    assert len(stored_directly) == 1  # the first request took the direct path, the second DOT's
    assert direct == general
    assert direct["body"] == {
        "expires_in": 300,
        "token_type": "Bearer",
        "scope": "records.read_own records.write_own",
    }
    assert direct["members"] == ["access_token", "expires_in", "token_type", "scope"]
    assert direct["access_token"]["checksum_is_sha256"] and direct["access_token"]["created_set"]
    assert direct["access_token"]["token"] == ""  # RFC 9700 storage: never the value
    assert [event["action"] for event in direct["events"]] == ["token.issued"]


def test_lifetime_rules_are_the_same_both_ways(client, settings, world):
    agent, key = world.background_agent()
    world.write.max_token_lifetime = 120
    world.write.save()
    helpers.grant(agent, world.read, expires_at=timezone.now() + timedelta(seconds=3600))
    helpers.grant(agent, world.write)
    direct, general = both_ways(
        client,
        settings,
        agent,
        key,
        scope="records.read_own records.write_own",
        resource=world.records.audience,
    )
    assert direct == general and direct["lifetime"] == 120


def test_a_grant_ending_soon_bounds_the_lifetime_both_ways(client, settings, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read, expires_at=timezone.now() + timedelta(seconds=90))
    direct, general = both_ways(client, settings, agent, key, resource=world.records.audience)
    assert direct["status"] == general["status"] == 200
    assert 85 <= direct["lifetime"] <= 90 and 85 <= general["lifetime"] <= 90
    direct.pop("lifetime"), general.pop("lifetime")
    for side in (direct, general):
        side["body"].pop("expires_in"), side["record"].pop("lifetime")
        for event in side["events"]:
            event["parameters"].pop("expires_in")
    assert direct == general


def _suspend(world, agent):
    agent.status = "suspended"
    agent.save()


def _step_up(world, agent):
    world.read.requires_step_up = True
    world.read.save()


def _dpop_required(world, agent):
    agent.dpop_bound_tokens_required = True
    agent.save()


def _revoke_grants(world, agent):
    agent.grants.update(revoked_at=timezone.now())


def _expire_grants(world, agent):
    agent.grants.update(expires_at=timezone.now() - timedelta(seconds=1))


# (name, set-up after the agent and its read grant exist, request keyword arguments)
REFUSALS = [
    ("scope beyond the grants", None, {"scope": "records.read_own records.write_own"}),
    ("capability outside the ceiling", None, {"scope": "records.read_own calendar.book"}),
    ("unknown capability", None, {"scope": "records.delete_everything"}),
    ("unknown audience", None, {"resource": "https://unknown.example.test/mcp"}),
    ("no resource", None, {"resource": None}),
    ("suspended agent", _suspend, {}),
    ("step-up capability", _step_up, {}),
    ("DPoP required", _dpop_required, {}),
    ("revoked grant", _revoke_grants, {}),
    ("expired grant", _expire_grants, {}),
    ("expired assertion", None, {"lifetime": -120}),
    ("assertion for another audience", None, {"claims": {"aud": "https://elsewhere.example.test"}}),
    ("iss is not sub", None, {"claims": {"sub": "someone-else"}}),
    ("assertion lives too long", None, {"lifetime": 7200}),
    ("a repeated resource", None, {"extra": [("resource", "https://calendar.example.test/mcp")]}),
    ("a client_id naming another client", None, {"extra": [("client_id", "another-client")]}),
    ("a query string", None, {"path": "/oauth/token/?scope=records.read_own"}),
]


@pytest.mark.parametrize(("setup", "kwargs"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_are_answered_and_audited_the_same_both_ways(
    client, settings, world, stored_directly, setup, kwargs
):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    if setup is not None:
        setup(world, agent)
    kwargs = {"resource": world.records.audience, **kwargs}
    direct, general = both_ways(client, settings, agent, key, **kwargs)
    assert direct["status"] >= 400, direct
    assert direct == general
    assert direct["events"], "a refusal is audited"
    assert not TokenRecord.objects.exists() and not stored_directly


@pytest.mark.parametrize(
    "scope", ["records.read_own  records.read_own", "records.read_own\trecords.read_own", " records.read_own"]
)
def test_oddly_written_scopes_are_left_to_dot(client, settings, world, scope):
    """oauthlib splits on single spaces, str.split() on any whitespace: these are left to DOT."""
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    direct, general = both_ways(client, settings, agent, key, scope=scope, resource=world.records.audience)
    assert direct == general


def test_a_replayed_assertion_is_refused_the_same_both_ways(client, settings, world):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    results = []
    for direct in (True, False):
        assertion = helpers.client_assertion(key, agent.application.client_id, settings.GATEHOUSE_ISSUER)
        first = post(
            client, settings, agent, key, direct=direct, resource=world.records.audience, assertion=assertion
        )
        assert first.status_code == 200
        seq = last_seq()
        again = post(
            client, settings, agent, key, direct=direct, resource=world.records.audience, assertion=assertion
        )
        results.append(outcome(again, seq))
    assert results[0]["status"] == 401 and results[0]["error"] == "invalid_client"
    assert results[0] == results[1]
    assert TokenRecord.objects.count() == 2


def test_another_agents_key_is_refused_the_same_both_ways(client, settings, world):
    agent, _ = world.background_agent()
    helpers.grant(agent, world.read)
    stranger = helpers.new_key()
    direct, general = both_ways(client, settings, agent, stranger, resource=world.records.audience)
    assert direct["status"] == 401 and direct == general


@pytest.mark.parametrize("kind", ["interactive", "client_secret"])
def test_clients_that_may_not_use_this_path_are_refused_the_same_both_ways(client, settings, world, kind):
    if kind == "interactive":
        agent, key = world.interactive_agent()
        helpers.grant(agent, world.read, user=world.member)
    else:
        key = helpers.new_key()
        agent, _ = world.background_agent(auth_method="client_secret_basic", key=key)
        helpers.grant(agent, world.read)
    direct, general = both_ways(client, settings, agent, key, resource=world.records.audience)
    assert direct["status"] in (400, 401) and direct == general
    assert not TokenRecord.objects.exists()


def test_a_request_handed_to_dot_has_consumed_nothing(client, settings, world, stored_directly):
    """No scope: the direct path leaves it to DOT (the agent's configured minimum), which issues."""
    agent, key = world.background_agent()
    agent.default_scope = "records.read_own"
    agent.save()
    helpers.grant(agent, world.read)
    response = post(client, settings, agent, key, direct=True, scope=None, resource=world.records.audience)
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "records.read_own" and not stored_directly
    assert AuditEvent.objects.filter(action="token.issued").count() == 1


def test_a_failed_write_stores_nothing(client, settings, world):
    """The access token, its record and the event are one statement (PostgreSQL) or one transaction."""
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION test_refuse_event() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER test_refuse_event BEFORE INSERT ON audit_auditevent"
                " FOR EACH ROW EXECUTE FUNCTION test_refuse_event()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER test_refuse_event BEFORE INSERT ON audit_auditevent"
                " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
    try:
        response = post(client, settings, agent, key, direct=True, resource=world.records.audience)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER test_refuse_event"
                + (" ON audit_auditevent" if connection.vendor == "postgresql" else "")
            )
            if connection.vendor == "postgresql":
                cursor.execute("DROP FUNCTION test_refuse_event()")
    assert response.status_code == 500
    assert response.json()["error"] == "server_error"
    assert "refused by the test" not in response.content.decode()
    assert not get_access_token_model().objects.exists()
    assert not TokenRecord.objects.exists()
    assert post(client, settings, agent, key, direct=True, resource=world.records.audience).status_code == 200


def test_one_assertion_sent_at_once_from_many_threads_gets_one_token(issuer, world):
    import httpx

    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    assertion = helpers.client_assertion(key, agent.application.client_id, issuer)
    data = {
        "grant_type": "client_credentials",
        "scope": "records.read_own",
        "resource": world.records.audience,
        "client_assertion_type": helpers.ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    statuses, start = [], threading.Barrier(8)

    def send():
        with httpx.Client(timeout=20) as http:
            start.wait()
            statuses.append(http.post(f"{issuer}/oauth/token/", data=data).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [401] * 7
    assert AuditEvent.objects.filter(action="token.issued").count() == 1
    assert TokenRecord.objects.count() == 1


@pytest.mark.postgres
def test_the_two_statements_are_prepared_once_per_connection(
    client, settings, world, django_assert_num_queries
):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    assert post(client, settings, agent, key, direct=True, resource=world.records.audience).status_code == 200
    with django_assert_num_queries(2):  # the agent with its grants; the token, its record and its event
        response = post(client, settings, agent, key, direct=True, resource=world.records.audience)
    assert response.status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any("audit_append" in s and "governance_tokenrecord" in s for s in prepared)
    assert any("governance_agent_ceiling" in s for s in prepared)


@pytest.fixture
def fresh_connection():
    """A new database session before and after the test (prepared statements live as long as one)."""
    connection.close()
    yield
    connection.close()


@pytest.mark.postgres
def test_without_prepared_statements_the_direct_path_still_answers(
    client, settings, world, monkeypatch, fresh_connection
):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "prepare_threshold", None)
    connection.close()  # the next session is opened with preparation off
    response = post(client, settings, agent, key, direct=True, resource=world.records.audience)
    assert response.status_code == 200, response.content
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 0


def test_a_capability_of_another_tool_server_with_the_same_key_is_not_mixed_in(client, settings, world):
    """The grants are found on the requested audience only, whatever key another server uses."""
    agent, key = world.background_agent()
    twin = CapabilityFactory(tool_server=world.calendar, key="records.read_own", max_token_lifetime=60)
    agent.ceiling.add(twin)
    helpers.grant(agent, twin)
    direct, general = both_ways(client, settings, agent, key, resource=world.records.audience)
    assert direct["status"] == 400 and direct["error"] == "invalid_scope" and direct == general
    helpers.grant(agent, world.read)
    direct, general = both_ways(client, settings, agent, key, resource=world.records.audience)
    assert direct["status"] == 200 and direct == general
    assert direct["lifetime"] == 300 and direct["claims"]["aud"] == world.records.audience


# ---- DPoP-bound client credentials: the direct path binds the token as DOT's path does -------------------
def _proof(settings, key):
    return dpop_client.make_proof("POST", settings.GATEHOUSE_ISSUER + "/oauth/token/", key)


def test_a_dpop_bound_token_is_stored_and_answered_the_same_both_ways(
    client, settings, world, stored_directly
):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    proof_key = dpop_client.new_key()
    seq = last_seq()
    kwargs = {"resource": world.records.audience}
    direct = outcome(
        post(
            client, settings, agent, key, direct=True, headers={"DPoP": _proof(settings, proof_key)}, **kwargs
        ),
        seq,
    )
    seq = last_seq()
    general = outcome(
        post(
            client,
            settings,
            agent,
            key,
            direct=False,
            headers={"DPoP": _proof(settings, proof_key)},
            **kwargs,
        ),
        seq,
    )
    assert direct["status"] == 200, direct
    assert len(stored_directly) == 1
    assert direct == general
    assert direct["body"]["token_type"] == "DPoP"
    assert direct["claims"]["cnf"] == {"jkt": proof_key.thumbprint()} == {"jkt": direct["record"]["cnf_jkt"]}
    assert direct["events"][0]["parameters"]["cnf_jkt"] == proof_key.thumbprint()


def test_an_agent_that_requires_dpop_gets_a_bound_token_the_same_both_ways(
    client, settings, world, stored_directly
):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    _dpop_required(world, agent)
    proof_key = dpop_client.new_key()
    seq = last_seq()
    kwargs = {"resource": world.records.audience}
    direct = outcome(
        post(
            client, settings, agent, key, direct=True, headers={"DPoP": _proof(settings, proof_key)}, **kwargs
        ),
        seq,
    )
    seq = last_seq()
    general = outcome(
        post(
            client,
            settings,
            agent,
            key,
            direct=False,
            headers={"DPoP": _proof(settings, proof_key)},
            **kwargs,
        ),
        seq,
    )
    assert direct["status"] == 200 and len(stored_directly) == 1
    assert direct == general


@pytest.mark.parametrize("bad", ["replayed", "wrong_htu", "wrong_htm"])
def test_a_bad_dpop_proof_is_refused_the_same_both_ways(client, settings, world, stored_directly, bad):
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)
    proof_key = dpop_client.new_key()
    url = settings.GATEHOUSE_ISSUER + "/oauth/token/"

    def proof():
        if bad == "wrong_htu":
            return dpop_client.make_proof("POST", url + "elsewhere/", proof_key)
        if bad == "wrong_htm":
            return dpop_client.make_proof("GET", url, proof_key)
        return replayed

    replayed = dpop_client.make_proof("POST", url, proof_key)
    if bad == "replayed":  # spend it once
        assert post(client, settings, agent, key, direct=False, headers={"DPoP": replayed},
                    resource=world.records.audience).status_code == 200  # fmt: skip
    seq = last_seq()
    kwargs = {"resource": world.records.audience}
    direct = outcome(
        post(client, settings, agent, key, direct=True, headers={"DPoP": proof()}, **kwargs), seq
    )
    seq = last_seq()
    general = outcome(
        post(client, settings, agent, key, direct=False, headers={"DPoP": proof()}, **kwargs), seq
    )
    assert direct["status"] == 400 and direct["error"] == "invalid_dpop_proof"
    assert direct == general
    assert [event["action"] for event in direct["events"]] == ["dpop.proof_refused"]
    assert not stored_directly
