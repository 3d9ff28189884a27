"""The policy file's shape (pydantic, strict): each refusal names its path and says why, and never more."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from governance.policy.schema import read_spec

CLINIC = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "clinic.yaml").read_text())


def problems(mutate) -> list[str]:
    document = copy.deepcopy(CLINIC)
    mutate(document)
    _, found = read_spec(document)
    return [f"{p.path}: {p.reason}" for p in found]


def put(*keys_and_value):
    *keys, value = keys_and_value

    def mutate(document):
        target = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def test_the_example_has_no_problems():
    spec, found = read_spec(copy.deepcopy(CLINIC))
    assert found == []
    alice = next(u for u in spec.users if u.username == "alice")
    assert (alice.path, alice.organization, alice.attributes) == (
        "users[4]",
        "clinic",
        {"patient_id": "p-001"},
    )
    assert spec.agents[1].ceiling_entries()[2] == ("agents[1].ceiling[2]", "appointments.cancel")


HOSTILE = [
    # Wrong types: strict, nothing coerced.
    ("version as boolean", put("version", True), "version: must be a whole number, not a boolean"),
    ("version 2", put("version", 2), "version: must be 1"),
    ("list as string", put("users", "alice"), "users: must be a list, not a string"),
    ("entry as string", put("agents", 0, "alice"), "agents[0]: must be a mapping, not a string"),
    (
        "number as string",
        put("tool_servers", 0, "capabilities", 0, "daily_quota", "5"),
        "daily_quota: must be a whole number, not a string",
    ),
    (
        "number as float",
        put("tool_servers", 0, "capabilities", 0, "daily_quota", 5.0),
        "daily_quota: must be a whole number",
    ),
    (
        "bool as number",
        put("agents", 0, "dpop_bound_tokens_required", 1),
        "agents[0].dpop_bound_tokens_required: must be true or false, not a number",
    ),
    ("name as number", put("agents", 0, "name", 7), "agents[0].name: must be a string, not a number"),
    (
        "username as list",
        put("users", 0, "username", ["dana"]),
        "users[0].username: must be a string, not a list",
    ),
    ("integer key", put("users", 0, 1, "x"), "users[0][1]: keys must be strings"),
    (
        "choice",
        put("users", 0, "role", "root"),
        "users[0].role: 'root' is not one of: admin, approver, member, auditor",
    ),
    (
        "range",
        put("tool_servers", 0, "capabilities", 0, "max_token_lifetime", 86401),
        "max_token_lifetime: must be between 1 and 86400",
    ),
    # Unknown keys, with what is allowed there.
    (
        "unknown nested key",
        put("tool_servers", 0, "capabilities", 0, "owner", "x"),
        "tool_servers[0].capabilities[0].owner: unknown key; allowed here: ",
    ),
    (
        "unknown constraint rule",
        put("tool_servers", 0, "capabilities", 0, "constraints", {"p": {"like": 1}}),
        "constraints.p.like: unknown key; the rules are equals, forbidden, in, max",
    ),
    (
        "client secret in a file",
        put("agents", 0, "client_secret", "s3cret-value"),
        "agents[0].client_secret: unknown key",
    ),
    # Names: NUL, control, bidi, over-long, empty.
    ("NUL in a name", put("agents", 0, "name", "voice\x00"), "agents[0].name: contains control characters"),
    (
        "bidi override in a name",
        put("agents", 0, "name", "voice\u202eevil"),
        "agents[0].name: contains bidirectional formatting characters",
    ),
    (
        "bidi isolate in a tool server name",
        put("tool_servers", 0, "name", "\u2067Records"),
        "tool_servers[0].name: contains bidirectional formatting characters",
    ),
    (
        "line separator in a first name",
        put("users", 0, "first_name", "Dana\u2028"),
        "users[0].first_name: contains control characters",
    ),
    (
        "over-long name",
        put("organizations", 0, "name", "x" * 201),
        "organizations[0].name: is 201 characters long; at most 200 are allowed",
    ),
    ("empty name", put("agents", 0, "name", ""), "agents[0].name: is required and must not be empty"),
    (
        "NUL in a description",
        put("agents", 0, "description", "a\x00b"),
        "agents[0].description: contains control characters",
    ),
    (
        "bidi in a reason",
        put("grants", 0, "reason", "\u202e"),
        "grants[0].reason: contains bidirectional formatting characters",
    ),
    # Attributes.
    (
        "attributes as list",
        put("users", 4, "attributes", ["p-001"]),
        "users[4].attributes: must be a mapping, not a list",
    ),
    (
        "NUL in an attribute",
        put("users", 4, "attributes", {"patient_id": "p\x00"}),
        "users[4].attributes.patient_id: contains control characters",
    ),
    (
        "bidi in an attribute",
        put("users", 4, "attributes", {"patient_id": "\u202ep"}),
        "users[4].attributes.patient_id: contains bidirectional formatting characters",
    ),
    (
        "over-long attribute",
        put("users", 4, "attributes", {"patient_id": "p" * 201}),
        "users[4].attributes.patient_id: is 201 characters long",
    ),
    (
        "nested attribute",
        put("users", 4, "attributes", {"patient_id": {"id": 1}}),
        "users[4].attributes.patient_id: must be a string or a whole number",
    ),
    (
        "boolean attribute",
        put("users", 4, "attributes", {"verified": True}),
        "users[4].attributes.verified: must be a string or a whole number",
    ),
    (
        "attribute name",
        put("users", 4, "attributes", {"Patient-Id": "p"}),
        "users[4].attributes: attribute names are lowercase",
    ),
    # Client ids and public clients.
    (
        "short client id",
        put("agents", 0, "client_id", "abc"),
        "agents[0].client_id: 'abc' is not a client id",
    ),
    (
        "client id with a space",
        put("agents", 0, "client_id", "voice agent 01"),
        "agents[0].client_id: 'voice agent 01' is not a client id",
    ),
    (
        "client id with NUL",
        put("agents", 0, "client_id", "voice-agent\x00"),
        "agents[0].client_id: contains control characters",
    ),
    (
        "over-long client id",
        put("agents", 0, "client_id", "v" * 101),
        "agents[0].client_id: is 101 characters long",
    ),
    (
        "unknown auth method",
        put("agents", 0, "token_endpoint_auth_method", "client_secret_jwt"),
        "agents[0].token_endpoint_auth_method: 'client_secret_jwt' is not one of: private_key_jwt,",
    ),
    (
        "public client with keys",
        put("agents", 0, "token_endpoint_auth_method", "none"),
        "agents[0].jwks: a public client (none) has no keys",
    ),
    (
        "public background agent",
        lambda d: d["agents"][2].update(token_endpoint_auth_method="none", jwks=None),
        "agents[2].token_endpoint_auth_method: a background agent authenticates with its key",
    ),
    # Tool servers' credentials.
    (
        "tool server key method without keys",
        put("tool_servers", 0, "token_endpoint_auth_method", "private_key_jwt"),
        "tool_servers[0].token_endpoint_auth_method: private_key_jwt needs jwks or jwks_uri",
    ),
    (
        "tool server secret method with keys",
        lambda d: d["tool_servers"][0].update(
            token_endpoint_auth_method="client_secret_basic", jwks_uri="https://records.clinic.example/jwks"
        ),
        "tool_servers[0].jwks: client_secret_basic uses a secret",
    ),
    (
        "tool server plain http JWKS URI",
        put("tool_servers", 0, "jwks_uri", "http://10.0.0.1/jwks"),
        "tool_servers[0].jwks_uri: 'http://10.0.0.1/jwks' must use https",
    ),
    (
        "tool server private key",
        put("tool_servers", 0, "jwks", {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
        "tool_servers[0].jwks.keys[0]: must be an EC, OKP or RSA key",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_or_mistyped_values_are_refused_with_their_path(mutate, expected):
    found = problems(mutate)
    assert any(expected in line for line in found), found


def test_a_refusal_never_echoes_key_material():
    secret = "c2VjcmV0LWtleS1tYXRlcmlhbA"
    found = problems(put("agents", 0, "jwks", {"keys": [{"kty": "oct", "k": secret}]}))
    assert found and secret not in " ".join(found)


def test_duplicate_client_ids_are_refused_across_agents_and_tool_servers():
    def mutate(document):
        document["agents"][0]["client_id"] = "clinic-client-01"
        document["agents"][1]["client_id"] = "clinic-client-01"
        document["tool_servers"][1].update(client_id="clinic-client-01", jwks_uri="https://b.example/jwks")

    found = problems(mutate)
    assert "agents[1]: repeats the client_id of agents[0]" in found
    assert "tool_servers[1]: repeats the client_id of agents[0]" in found


def test_every_problem_is_reported_not_just_the_first():
    def mutate(document):
        document["agents"][0]["name"] = "\x1b"
        document["users"][0]["role"] = "root"
        document["grants"][0]["expires_at"] = "tomorrow"

    found = problems(mutate)
    assert len(found) == 3
    assert "grants[0].expires_at: 'tomorrow' is not an ISO 8601 timestamp" in found


def test_null_means_the_default():
    spec, found = read_spec(
        {
            "version": 1,
            "organizations": [{"slug": "a", "name": "A"}],
            "users": [{"username": "x", "role": None}],
        }
    )
    assert found == [] and spec.users[0].role == "member"


@pytest.mark.parametrize(
    ("document", "expected"),
    [(None, ": the file is empty"), ([1], ": must be a mapping, not a list"), ({}, "version: is required")],
)
def test_the_top_level(document, expected):
    _, found = read_spec(document)
    assert expected in [f"{p.path}: {p.reason}" for p in found]


def test_a_huge_list_is_refused_without_reading_each_entry():
    _, found = read_spec({"version": 1, "grants": [{}] * 20_001})
    assert [f"{p.path}: {p.reason}" for p in found] == [
        "grants: holds 20001 entries; at most 20000 are allowed"
    ]
