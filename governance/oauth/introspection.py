"""RFC 7662 introspection for tool servers: each may ask only about tokens addressed to it.

Anything else — unknown, expired, revoked, another audience, a suspended agent, a lapsed grant, a
deactivated user — is exactly ``{"active": false}``.  Callers authenticate as a registered tool server
(private_key_jwt preferred; a client secret only where the tool server is configured for it).
"""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauthlib.common import Request as OauthlibRequest

from audit import services as audit
from audit.actions import Action
from governance.conf import gatehouse_settings
from governance.models import ToolServer
from governance.oauth import state
from governance.oauth.endpoint import oauth_endpoint, oauth_error
from governance.oauth.principals import principal_for
from governance.oauth.refusals import RefusalEvent
from governance.oauth.tokens import describe, find_record, still_valid

INACTIVE = {"active": False}


def authenticate_tool_server(request) -> ToolServer | None:
    """The tool server the request's client credentials authenticate (DOT's validator decides), or None."""
    core = get_oauthlib_core()
    uri, method, body, headers = core._extract_params(request)
    oauth_request = OauthlibRequest(uri, method, body, headers)
    if not core.server.request_validator.authenticate_client(oauth_request):
        return None
    principal = principal_for(oauth_request.client)
    return principal if isinstance(principal, ToolServer) else None


@csrf_exempt
@oauth_endpoint("introspect")
@never_cache
@require_POST
def introspect(request):
    tool_server = authenticate_tool_server(request)
    current = state.current()
    if tool_server is None:
        current.refuse(
            RefusalEvent(
                action=Action.TOKEN_INTROSPECTED,
                error="invalid_client",
                agent=current.agent,
                tool_server=current.tool_server,
                parameters={
                    "reason": current.reason or "not a registered tool server",
                    "client_id": current.client_id,
                },
            )
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
        current.refuse(
            RefusalEvent(
                action=Action.TOKEN_INTROSPECTED,
                error="audience_mismatch",
                tool_server=tool_server,
                audience=tool_server.audience,
                parameters={"jti": record.jti, "token_audience": record.audience},
            )
        )
        return JsonResponse(INACTIVE)
    if not still_valid(record):
        return JsonResponse(INACTIVE)
    if gatehouse_settings.AUDIT_INTROSPECTION:
        audit.record(
            action=Action.TOKEN_INTROSPECTED,
            actor=tool_server,
            agent=record.agent,
            on_behalf_of=record.user,
            capabilities=record.capability_keys,
            parameters={"jti": record.jti, "audience": record.audience},
        )
    return JsonResponse(describe(record))
