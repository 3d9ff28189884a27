"""Challenges' exact header syntax (RFC 6750 §3, RFC 9449 §7.1, RFC 9470 §3, RFC 9728 §5.1) and the
protected-resource metadata document (RFC 9728 §2-3)."""

from __future__ import annotations

import pytest

from gatehouse_toolkit import Decision, ToolServerGuard, ToolServerSettings, protected_resource_metadata
from gatehouse_toolkit.challenges import quoted

SETTINGS = ToolServerSettings(
    issuer="https://gatehouse.example.test",
    resource="https://records.example.test/mcp",
    scopes_supported=("records.read_own", "appointments.book"),
    resource_name="Clinic records",
)
GUARD = ToolServerGuard(SETTINGS)
PRM = 'resource_metadata="https://records.example.test/.well-known/oauth-protected-resource/mcp"'
ALGS = 'algs="ES256 ES384 EdDSA RS256 PS256"'


def test_no_token_gets_a_bare_challenge_naming_the_metadata():
    challenge = GUARD.challenges.missing_token()
    assert challenge.status == 401
    assert challenge.headers == {"WWW-Authenticate": f"Bearer {PRM}"}


def test_invalid_token_bearer_and_dpop():
    bearer = GUARD.challenges.invalid_token("The access token has expired.")
    assert bearer.status == 401
    assert bearer.headers["WWW-Authenticate"] == (
        f'Bearer error="invalid_token", error_description="The access token has expired.", {PRM}'
    )
    dpop = GUARD.challenges.invalid_token("Bad proof.", scheme="DPoP", error="invalid_dpop_proof")
    assert dpop.headers["WWW-Authenticate"] == (
        f'DPoP error="invalid_dpop_proof", error_description="Bad proof.", {PRM}, {ALGS}'
    )


@pytest.mark.parametrize(
    ("decision", "status", "header", "extra"),
    [
        (
            Decision(False, reason="token_revoked", check="token", message="The access token was revoked."),
            401,
            f'Bearer error="invalid_token", error_description="The access token was revoked.", {PRM}',
            {},
        ),
        (
            Decision(
                False,
                reason="insufficient_scope",
                check="scope",
                message="Not granted.",
                scope="appointments.cancel",
            ),
            403,
            'Bearer error="insufficient_scope", error_description="Not granted.", '
            f'scope="appointments.cancel", {PRM}',
            {},
        ),
        (
            Decision(
                False,
                reason="step_up_required",
                check="user",
                message="Sign in again.",
                acr_values="urn:gatehouse:acr:mfa",
                max_age=300,
            ),
            401,
            'Bearer error="insufficient_user_authentication", error_description="Sign in again.", '
            f'acr_values="urn:gatehouse:acr:mfa", max_age="300", {PRM}',
            {},
        ),
        (
            Decision(False, reason="dpop_invalid", check="token", message="Bad proof."),
            401,
            f'DPoP error="invalid_dpop_proof", error_description="Bad proof.", {PRM}, {ALGS}',
            {},
        ),
        (
            Decision(False, reason="rate_limited", check="rate", message="Slow down.", retry_after=12),
            429,
            None,
            {"Retry-After": "12"},
        ),
        (
            Decision(False, reason="quota_exceeded", check="rate", message="Daily quota.", retry_after=3600),
            429,
            None,
            {"Retry-After": "3600"},
        ),
        (Decision.unavailable(), 503, None, {"Retry-After": "5"}),
        (
            Decision(False, reason="constraint_violated", check="user", message="Not allowed for this user."),
            403,
            None,
            {},
        ),
        (Decision(False, reason="approval_required", check="user", message="Needs approval."), 403, None, {}),
        (Decision(False, reason="grant_inactive", check="user", message="Grant revoked."), 403, None, {}),
    ],
)
def test_each_denial_maps_to_its_answer(decision, status, header, extra):
    challenge = GUARD.challenge_for(decision, capability="appointments.cancel")
    assert challenge.status == status
    assert challenge.headers.get("WWW-Authenticate") == header
    for name, value in extra.items():
        assert challenge.headers[name] == value
    assert challenge.body()["error_description"] == (decision.message or challenge.description)
    if status in (403, 429):
        assert challenge.body()["reason"] == decision.reason


def test_insufficient_scope_in_the_dpop_scheme_names_the_capability_when_the_answer_does_not():
    decision = Decision(False, reason="insufficient_scope", check="scope", message="Not granted.")
    challenge = GUARD.challenge_for(decision, scheme="DPoP", capability="records.read_own")
    assert challenge.headers["WWW-Authenticate"].startswith('DPoP error="insufficient_scope"')
    assert 'scope="records.read_own"' in challenge.headers["WWW-Authenticate"]


def test_quoted_strings_cannot_break_out_of_the_header():
    assert quoted('a"b\\c') == '"a\\"b\\\\c"'
    assert quoted("line\r\nSet-Cookie: x=1\x00\x7f") == '"lineSet-Cookie: x=1"'
    hostile = Decision(False, reason="insufficient_scope", message='x", error="none\r\nX: y', scope="a\nb")
    header = GUARD.challenge_for(hostile).headers["WWW-Authenticate"]
    assert "\r" not in header and "\n" not in header
    assert header.count('error="') == 1 and 'x\\", error=\\"none' in header


def test_protected_resource_metadata_from_settings():
    assert protected_resource_metadata(SETTINGS) == {
        "resource": "https://records.example.test/mcp",
        "authorization_servers": ["https://gatehouse.example.test"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "RS256", "PS256"],
        "scopes_supported": ["records.read_own", "appointments.book"],
        "resource_name": "Clinic records",
    }
    assert SETTINGS.metadata_url == "https://records.example.test/.well-known/oauth-protected-resource/mcp"
    root = ToolServerSettings(issuer="https://gh.test", resource="https://api.test/")
    assert root.metadata_url == "https://api.test/.well-known/oauth-protected-resource"
    assert "scopes_supported" not in protected_resource_metadata(root)
    bearer_only = ToolServerSettings(issuer="https://gh.test", resource="https://api.test/", dpop_algs=())
    assert "dpop_signing_alg_values_supported" not in protected_resource_metadata(bearer_only)
