"""Helpers for end-to-end OAuth tests against a live server: keys, agents, client assertions, PKCE, login.

Shared with the consent and interop tests; keep the signatures stable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.utils.module_loading import import_string
from jwcrypto import jwk, jwt
from oauth2_provider.models import get_application_model

from governance.models import Agent, Grant, ToolServer
from governance.models.agents import AgentKind, AgentStatus

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REDIRECT_URI = "http://127.0.0.1:8765/callback"


def new_key(*, kty: str = "EC", crv: str = "P-256") -> jwk.JWK:
    """A fresh private key with a kid (its RFC 7638 thumbprint)."""
    key = jwk.JWK.generate(kty=kty, crv=crv) if kty != "RSA" else jwk.JWK.generate(kty="RSA", size=2048)
    return jwk.JWK(**{**json.loads(key.export_private()), "kid": key.thumbprint()})


def public_jwks(*keys: jwk.JWK) -> dict:
    return {"keys": [json.loads(k.export_public()) for k in keys]}


def make_agent(
    *,
    organization,
    owner,
    name: str | None = None,
    kind: str = AgentKind.INTERACTIVE,
    ceiling=(),
    key: jwk.JWK | None = None,
    auth_method: str = "private_key_jwt",
    redirect_uris: tuple[str, ...] = (REDIRECT_URI,),
    status: str = AgentStatus.ACTIVE,
    client_secret: str | None = None,
) -> tuple[Agent, jwk.JWK | None]:
    """An agent and its DOT application; with private_key_jwt, a fresh EC key (public half registered)."""
    Application = get_application_model()
    if auth_method == "private_key_jwt" and key is None:
        key = new_key()
    interactive = kind == AgentKind.INTERACTIVE
    application = Application(
        name=name or f"agent-{uuid.uuid4().hex[:8]}",
        user=owner,
        client_type=Application.CLIENT_PUBLIC if auth_method == "none" else Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=(
            Application.GRANT_AUTHORIZATION_CODE if interactive else Application.GRANT_CLIENT_CREDENTIALS
        ),
        redirect_uris=" ".join(redirect_uris) if interactive else "",
    )
    application.client_secret = client_secret or secrets.token_urlsafe(48)
    application.save()
    agent = Agent.objects.create(
        organization=organization,
        owner=owner,
        name=application.name,
        kind=kind,
        status=status,
        application=application,
        token_endpoint_auth_method=auth_method,
        jwks=public_jwks(key) if key is not None else {},
    )
    agent.ceiling.set(list(ceiling))
    return agent, key


def make_tool_server_client(tool_server: ToolServer, *, owner, key: jwk.JWK | None = None) -> jwk.JWK:
    """Give a tool server its own application and key, for introspection with private_key_jwt."""
    Application = get_application_model()
    key = key or new_key()
    application = Application.objects.create(
        name=f"{tool_server.name} (tool server)",
        user=owner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    tool_server.application = application
    tool_server.jwks = public_jwks(key)
    tool_server.token_endpoint_auth_method = "private_key_jwt"
    tool_server.save()
    return key


def grant(agent: Agent, capability, user=None, *, expires_at=None) -> Grant:
    return Grant.objects.create(
        organization_id=agent.organization_id,
        agent=agent,
        capability=capability,
        user=user,
        expires_at=expires_at,
    )


def client_assertion(
    key: jwk.JWK,
    client_id: str,
    audience: str,
    *,
    lifetime: int = 120,
    jti: str | None = None,
    alg: str = "ES256",
    claims: dict | None = None,
    header: dict | None = None,
) -> str:
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime,
        "jti": jti or uuid.uuid4().hex,
    }
    body.update(claims or {})
    head = {"alg": alg, "kid": key.get("kid")} if key.get("kid") else {"alg": alg}
    head.update(header or {})
    token = jwt.JWT(header=head, claims=body)
    token.make_signed_token(key)
    return token.serialize()


def assertion_params(key: jwk.JWK, client_id: str, audience: str, **kwargs) -> dict:
    return {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion(key, client_id, audience, **kwargs),
    }


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def login(client: httpx.Client, user) -> None:
    """Sign ``user`` in by creating a session the live server accepts (no login page involved)."""
    store = import_string(settings.SESSION_ENGINE + ".SessionStore")()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    client.cookies.set(settings.SESSION_COOKIE_NAME, store.session_key)


class _FormParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("name") and attrs.get("type") in ("hidden", None):
            self.fields[attrs["name"]] = attrs.get("value") or ""


def authorize(
    client: httpx.Client,
    base_url: str,
    *,
    client_id: str,
    scope: str,
    resource: str | None,
    challenge: str,
    method: str = "S256",
    redirect_uri: str = REDIRECT_URI,
    state: str = "xyz",
) -> httpx.Response:
    """Open the authorization page and press Allow; the response is the final redirect (or an error page)."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": method,
    }
    if resource is not None:
        params["resource"] = resource
    page = client.get(f"{base_url}/oauth/authorize/?{urlencode(params)}")
    if page.status_code != 200:
        return page
    parser = _FormParser()
    parser.feed(page.text)
    form = {**parser.fields, "allow": "Authorize"}
    return client.post(
        f"{base_url}/oauth/authorize/?{urlencode(params)}",
        data=form,
        headers={"Referer": f"{base_url}/oauth/authorize/"},
    )


def code_from(response: httpx.Response) -> dict:
    """The query of the redirect an authorization answer points to (code, state, iss or error)."""
    assert response.status_code == 302, (response.status_code, response.text[:300])
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return {k: v[0] for k, v in query.items()}
