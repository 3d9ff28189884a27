"""RFC 7662 introspection for tool servers: each may ask only about tokens addressed to it.

Anything else — unknown, expired, revoked, another audience, a suspended agent, a lapsed grant, a
deactivated user — is exactly ``{"active": false}``.  Callers authenticate as a registered tool server
(private_key_jwt preferred; a client secret only where the tool server is configured for it).
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from oauth2_provider.models import get_access_token_model
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauthlib.common import Request as OauthlibRequest

from audit import services as audit
from audit.actions import Action
from governance import auth_levels
from governance.models import TokenRecord, ToolServer
from governance.oauth import context
from governance.oauth.events import record_refusal
from governance.oauth.scoping import evaluate_request
from governance.oauth.validator import principal_for
from governance.oauth.views import oauth_endpoint, oauth_error

INACTIVE = {"active": False}


def authenticate_tool_server(request) -> ToolServer | None:
    core = get_oauthlib_core()
    uri, method, body, headers = core._extract_params(request)
    oauth_request = OauthlibRequest(uri, method, body, headers)
    if not core.server.request_validator.authenticate_client(oauth_request):
        return None
    principal = principal_for(oauth_request.client)
    return principal if isinstance(principal, ToolServer) else None


def find_record(value: str) -> TokenRecord | None:
    """The record of an unexpired, unrevoked access token with exactly this value (None otherwise).

    A revoked token's row is gone and a tampered one matches no checksum, so both are None here.
    """
    if not isinstance(value, str) or not value:
        return None
    checksum = hashlib.sha256(value.encode()).hexdigest()
    access_token = (
        get_access_token_model().objects.filter(token_checksum=checksum).only("pk", "expires").first()
    )
    if access_token is None or access_token.is_expired():
        return None
    return (
        TokenRecord.objects.select_related("agent", "user", "tool_server")
        .filter(access_token=access_token)
        .first()
    )


def still_valid(record: TokenRecord) -> bool:
    """Its agent and user are active and its grants still cover every capability it carries."""
    agent = record.agent
    if not agent.is_active or (record.user is not None and not record.user.is_active):
        return False
    decision = evaluate_request(
        agent=agent, user=record.user, audience=record.tool_server, requested=record.capability_keys
    )
    return decision.ok


def describe(record: TokenRecord) -> dict:
    data = {
        "active": True,
        "iss": settings.GATEHOUSE_ISSUER,
        "sub": record.subject,
        "client_id": record.client_id,
        "scope": record.capabilities,
        "aud": record.audience,
        "exp": int(record.expires_at.timestamp()),
        "iat": int(record.issued_at.timestamp()),
        "jti": record.jti,
        "token_type": "DPoP" if record.cnf_jkt else "Bearer",
    }
    if record.cnf_jkt:
        data["cnf"] = {"jkt": record.cnf_jkt}
    if record.act:
        data["act"] = record.act
    if record.acr:  # step-up: the person's authentication level and time, as in the JWT
        data["acr"] = record.acr
        data["amr"] = list(auth_levels.AMR.get(record.acr, []))
    if record.auth_time is not None:
        data["auth_time"] = int(record.auth_time.timestamp())
    return data


@csrf_exempt
@oauth_endpoint("introspect")
@never_cache
@require_POST
def introspect(request):
    tool_server = authenticate_tool_server(request)
    if tool_server is None:
        trace = context.trace()
        record_refusal(
            action=Action.TOKEN_INTROSPECTED,
            error="invalid_client",
            agent=trace.agent,
            tool_server=trace.tool_server,
            parameters={
                "reason": trace.reason or "not a registered tool server",
                "client_id": trace.client_id,
            },
        )
        return oauth_error(
            "invalid_client",
            "Introspection is for registered tool servers.",
            401,
            {"WWW-Authenticate": 'Basic realm="gatehouse"'},
        )
    value = request.POST.get("token")
    if not value:
        return oauth_error("invalid_request", "The token parameter is missing.")
    record = find_record(value)
    if record is None:
        return JsonResponse(INACTIVE)
    if record.tool_server_id != tool_server.pk:
        record_refusal(
            action=Action.TOKEN_INTROSPECTED,
            error="audience_mismatch",
            tool_server=tool_server,
            agent=None,
            user=None,
            audience=tool_server.audience,
            parameters={"jti": record.jti, "token_audience": record.audience},
        )
        return JsonResponse(INACTIVE)
    if not still_valid(record):
        return JsonResponse(INACTIVE)
    if settings.GATEHOUSE_AUDIT_INTROSPECTION:
        audit.record(
            action=Action.TOKEN_INTROSPECTED,
            actor=tool_server,
            agent=record.agent,
            on_behalf_of=record.user,
            capabilities=record.capability_keys,
            parameters={"jti": record.jti, "audience": record.audience},
        )
    return JsonResponse(describe(record))
