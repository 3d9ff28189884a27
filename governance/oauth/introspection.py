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

from audit import services as audit
from audit.actions import Action
from governance.conf import gatehouse_settings
from governance.models import ToolServer
from governance.oauth import state
from governance.oauth.endpoint import oauth_endpoint, oauth_error
from governance.oauth.refusals import RefusalEvent
from governance.oauth.tokens import describe, find_record, still_valid
from governance.oauth.validator import authenticate_request_client

INACTIVE = {"active": False}


def authenticate_tool_server(request, body=()) -> ToolServer | None:
    """The tool server the request's client credentials authenticate (DOT's validator decides), or None.
    ``body``: the form parameters that may carry them (``client_secret_post``, a client assertion)."""
    principal = authenticate_request_client(request, body)
    return principal if isinstance(principal, ToolServer) else None


def _form_pairs(request) -> list[tuple[str, str]]:
    """The form body as oauthlib reads it (the last value of a repeated parameter, as DOT passes it)."""
    return [(key, values[-1]) for key, values in request.POST.lists()]


@csrf_exempt
@oauth_endpoint("introspect")
@never_cache
@require_POST
def introspect(request):
    tool_server = authenticate_tool_server(request, _form_pairs(request))
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
