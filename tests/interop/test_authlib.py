"""Authlib's OAuth 2 client (httpx integration), unmodified: client credentials with private_key_jwt."""

from __future__ import annotations

import json

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey

from audit.models import AuditEvent
from governance.models import TokenRecord
from tests.oauth import helpers

pytestmark = pytest.mark.django_db(transaction=True)


def authlib_client(agent, key, token_url: str) -> OAuth2Client:
    private = ECKey.import_key(json.loads(key.export_private()))
    client = OAuth2Client(
        client_id=agent.application.client_id,
        client_secret=private,
        token_endpoint_auth_method=PrivateKeyJWT(token_url, alg="ES256"),
        timeout=20,
    )
    return client


def test_authlib_gets_a_client_credentials_token_with_private_key_jwt(clinic, stub, issuer):
    agent, key = helpers.make_agent(
        organization=clinic.org, owner=clinic.admin, kind="background", ceiling=[clinic.read, clinic.write]
    )
    helpers.grant(agent, clinic.read)
    metadata = httpx.get(f"{issuer}/.well-known/oauth-authorization-server").json()
    token_url = metadata["token_endpoint"]
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]

    with authlib_client(agent, key, token_url) as client:
        token = client.fetch_token(
            token_url, grant_type="client_credentials", scope="records.read_own", resource=stub.resource
        )
        # The token works at the tool server, which checks it against Gatehouse's JWKS.
        assert client.get(stub.resource).status_code == 200

    assert token["token_type"] == "Bearer" and token["scope"] == "records.read_own"
    [claims] = stub.accepted
    client_id = agent.application.client_id
    assert claims["aud"] == stub.resource and claims["iss"] == issuer
    assert claims["sub"] == client_id == claims["client_id"]
    assert claims["scope"] == "records.read_own"
    assert TokenRecord.objects.filter(jti=claims["jti"]).exists()
    event = AuditEvent.objects.get(agent_id=agent.pk, action="token.issued")
    assert json.loads(event.parameters)["jti"] == claims["jti"] and event.capabilities == "records.read_own"
    assert token["access_token"] not in event.parameters


def test_authlib_asking_beyond_the_grant_is_refused_and_audited(clinic, stub, issuer):
    agent, key = helpers.make_agent(
        organization=clinic.org, owner=clinic.admin, kind="background", ceiling=[clinic.read, clinic.write]
    )
    helpers.grant(agent, clinic.read)
    token_url = f"{issuer}/oauth/token/"
    with authlib_client(agent, key, token_url) as client, pytest.raises(Exception, match="invalid_scope"):
        client.fetch_token(
            token_url,
            grant_type="client_credentials",
            scope="records.read_own records.write_own",
            resource=stub.resource,
        )
    event = AuditEvent.objects.get(agent_id=agent.pk, action="elevation.attempted")
    assert "records.write_own" in event.capabilities
    assert not AuditEvent.objects.filter(agent_id=agent.pk, action="token.issued").exists()
