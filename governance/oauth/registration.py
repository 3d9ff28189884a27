"""RFC 7591 dynamic client registration: every registered client is an interactive agent.

A registration without an initial access token creates a *pending* agent (no token until an admin runs
``agent_activate``); one with a valid initial access token (``manage.py initial_access_token create``) creates
an active agent whose ceiling the token names.  The organization is the initial access token's, else
``GATEHOUSE_DCR_ORGANIZATION``; the owner is ``GATEHOUSE_DCR_OWNER``, else that organization's first admin.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_application_model

from audit import services as audit
from audit.actions import Action, ActorType
from audit.services import Actor
from governance.conf import gatehouse_settings
from governance.errors import InvalidInput
from governance.keys import validate_public_jwks
from governance.models import Agent, Capability, InitialAccessToken, Organization, Role, User
from governance.models.agents import AgentKind, AgentStatus, TokenEndpointAuthMethod
from governance.oauth.endpoint import oauth_endpoint, oauth_error
from governance.text import text_problem

MAX_BODY = 16 * 1024
MAX_REDIRECT_URIS = 10
# The agent's name is the client's name and " (" + 8 characters of its client_id + ")": 200 in all.
MAX_CLIENT_NAME = 180
ALLOWED_GRANT_TYPES = {"authorization_code", "refresh_token"}
REGISTRANT = Actor(type=ActorType.ANONYMOUS, label="dynamic client registration")


class RegistrationError(Exception):
    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


@dataclass
class Registered:
    agent: Agent
    client_secret: str | None
    metadata: dict


def _redirect_uris(value) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > MAX_REDIRECT_URIS:
        raise RegistrationError("invalid_redirect_uri", "Register between one and ten redirect_uris.")
    for uri in value:
        if not isinstance(uri, str) or text_problem(uri, max_length=2000) or "#" in uri or " " in uri:
            raise RegistrationError("invalid_redirect_uri", "A redirect URI is malformed.")
        parts = urlsplit(uri)
        loopback = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost")
        if not parts.netloc or "@" in parts.netloc or not (parts.scheme == "https" or loopback):
            raise RegistrationError(
                "invalid_redirect_uri",
                "Redirect URIs must be https, or http on a loopback address (RFC 8252).",
            )
    return value


def _text(metadata: dict, name: str, limit: int) -> str:
    """A string member held to the one text rule (:func:`governance.text.text_problem`): no control or
    bidirectional formatting characters, no NUL, at most ``limit`` characters."""
    value = metadata.get(name, "")
    if not isinstance(value, str):
        raise RegistrationError("invalid_client_metadata", f"{name} must be a string.")
    if problem := text_problem(value, max_length=limit):
        raise RegistrationError("invalid_client_metadata", f"{name} {problem}.")
    return value


def validate_metadata(metadata) -> dict:
    if not isinstance(metadata, dict):
        raise RegistrationError("invalid_client_metadata", "The body must be a JSON object.")
    method = metadata.get("token_endpoint_auth_method", TokenEndpointAuthMethod.CLIENT_SECRET_BASIC)
    if method not in TokenEndpointAuthMethod.values:
        raise RegistrationError("invalid_client_metadata", "Unsupported token_endpoint_auth_method.")
    grant_types = metadata.get("grant_types", ["authorization_code"])
    if (
        not isinstance(grant_types, list)
        or not grant_types
        or not set(grant_types) <= ALLOWED_GRANT_TYPES
        or "authorization_code" not in grant_types
    ):
        raise RegistrationError(
            "invalid_client_metadata", "grant_types: authorization_code (and refresh_token) only."
        )
    if metadata.get("response_types", ["code"]) != ["code"]:
        raise RegistrationError("invalid_client_metadata", "response_types: code only.")
    clean = {
        "redirect_uris": _redirect_uris(metadata.get("redirect_uris")),
        "token_endpoint_auth_method": method,
        "grant_types": grant_types,
        "response_types": ["code"],
        "client_name": _text(metadata, "client_name", MAX_CLIENT_NAME),
        "scope": " ".join(_text(metadata, "scope", 1000).split()),
        "jwks_uri": _text(metadata, "jwks_uri", 500),
    }
    jwks = metadata.get("jwks")
    if method == TokenEndpointAuthMethod.PRIVATE_KEY_JWT:
        if not jwks and not clean["jwks_uri"]:
            raise RegistrationError("invalid_client_metadata", "private_key_jwt needs jwks or jwks_uri.")
        if clean["jwks_uri"] and urlsplit(clean["jwks_uri"]).scheme != "https" and not settings.DEBUG:
            raise RegistrationError("invalid_client_metadata", "jwks_uri must be https.")
    try:
        clean["jwks"] = validate_public_jwks(jwks) if jwks else {}
    except InvalidInput:
        raise RegistrationError("invalid_client_metadata", "jwks must be a set of public keys.") from None
    return clean


def _initial_access_token(value: str | None) -> InitialAccessToken | None:
    if value is None:
        return None
    digest = hashlib.sha256(value.encode()).hexdigest()
    token = InitialAccessToken.objects.select_for_update().filter(token_hash=digest).first()
    if token is None or not token.is_usable():
        raise RegistrationError("invalid_token", "The initial access token is not valid.", 401)
    return token


def _organization_and_owner(iat: InitialAccessToken | None) -> tuple[Organization, User]:
    organization = (
        iat.organization
        if iat
        else Organization.objects.filter(slug=gatehouse_settings.DCR_ORGANIZATION or None).first()
    )
    if organization is None:
        raise RegistrationError("invalid_client_metadata", "Open registration is not configured here.", 403)
    owners = User.objects.filter(organization=organization, is_active=True)
    owner = (
        owners.filter(username=gatehouse_settings.DCR_OWNER).first()
        if gatehouse_settings.DCR_OWNER
        else owners.filter(role=Role.ADMIN).order_by("pk").first()
    )
    if owner is None:
        raise RegistrationError("invalid_client_metadata", "Registration has no owner configured.", 403)
    return organization, owner


def client_register(*, actor: Actor, metadata: dict, initial_access_token: str | None) -> Registered:
    """Register a client: DOT application, agent (pending or active), one ``client.registered`` event."""
    if initial_access_token is None and not gatehouse_settings.DCR_OPEN:
        raise RegistrationError("invalid_token", "An initial access token is required.", 401)
    clean = validate_metadata(metadata)
    Application = get_application_model()
    public = clean["token_endpoint_auth_method"] == TokenEndpointAuthMethod.NONE
    secret = (
        None
        if public or clean["token_endpoint_auth_method"] == TokenEndpointAuthMethod.PRIVATE_KEY_JWT
        else generate_client_secret()
    )
    with transaction.atomic():
        iat = _initial_access_token(initial_access_token)
        organization, owner = _organization_and_owner(iat)
        application = Application(
            name=(clean["client_name"] or "Registered client")[:200],
            user=owner,
            client_type=Application.CLIENT_PUBLIC if public else Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=" ".join(clean["redirect_uris"]),
            registration_source="dcr",
        )
        application.client_secret = (
            secret or generate_client_secret()
        )  # hashed on save; unused when no secret
        application.save()
        agent = Agent.objects.create(
            organization=organization,
            owner=owner,
            kind=AgentKind.INTERACTIVE,
            application=application,
            name=f"{clean['client_name'] or 'Registered client'} ({application.client_id[:8]})",
            status=AgentStatus.ACTIVE if iat else AgentStatus.PENDING,
            token_endpoint_auth_method=clean["token_endpoint_auth_method"],
            jwks=clean["jwks"],
            jwks_uri=clean["jwks_uri"],
            description="Registered dynamically (RFC 7591).",
        )
        ceiling = list(
            Capability.objects.filter(
                tool_server__organization=organization, key__in=(iat.ceiling.split() if iat else [])
            )
        )
        agent.ceiling.set(ceiling)
        known = set(
            Capability.objects.filter(tool_server__organization=organization).values_list("key", flat=True)
        )
        agent.default_scope = " ".join(k for k in clean["scope"].split() if k in known)[:1000]
        agent.save(update_fields=["default_scope"])
        if iat:
            iat.uses += 1
            iat.save(update_fields=["uses"])
        audit.record(
            action=Action.CLIENT_REGISTERED,
            actor=actor,
            organization=organization,
            agent=agent,
            target=agent,
            capabilities=[c.key for c in ceiling],
            parameters={
                "client_id": application.client_id,
                "status": agent.status,
                "token_endpoint_auth_method": agent.token_endpoint_auth_method,
                "redirect_uris": clean["redirect_uris"],
                "initial_access_token": iat.pk if iat else None,
                "client_name": clean["client_name"],
            },
        )
    response = {
        "client_id": application.client_id,
        "client_id_issued_at": int(timezone.now().timestamp()),
        **{k: v for k, v in clean.items() if v not in ("", {})},
    }
    if secret:
        response["client_secret"] = secret
        response["client_secret_expires_at"] = 0
    return Registered(agent=agent, client_secret=secret, metadata=response)


def _bearer(request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@csrf_exempt
@oauth_endpoint("register")
@never_cache
@require_POST
def register(request):
    if len(request.body) > MAX_BODY:
        return oauth_error("invalid_client_metadata", "The registration request is too large.")
    try:
        metadata = json.loads(request.body or b"null")
        registered = client_register(
            actor=REGISTRANT, metadata=metadata, initial_access_token=_bearer(request)
        )
    except ValueError:
        return oauth_error("invalid_client_metadata", "The body must be JSON.")
    except RegistrationError as exc:
        return oauth_error(exc.error, exc.description, exc.status)
    return JsonResponse(registered.metadata, status=201)
