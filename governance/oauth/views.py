"""OAuth endpoints: DOT views wrapped so every failure is RFC 6749 §5.2 JSON and every refusal is audited."""

from __future__ import annotations

import functools
import hashlib
import json
import logging

from django.http import HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from oauth2_provider import views as dot_views
from oauth2_provider.models import get_access_token_model
from oauth2_provider.signals import app_authorized

from audit.actions import Action
from governance.oauth import context, direct, dpop_http
from governance.oauth.dpop import issue_nonce
from governance.oauth.events import record_refusal

log = logging.getLogger(__name__)

# Upper bounds for untrusted parameters; anything longer is refused before it reaches oauthlib or a query.
PARAM_LIMITS = {
    "client_id": 255,
    "scope": 2000,
    "resource": 500,
    "grant_type": 64,
    "redirect_uri": 2000,
    "code_verifier": 128,
    "token_type_hint": 32,
}
DEFAULT_LIMIT = 8192
SINGLE_VALUED = (
    "client_assertion",
    "client_assertion_type",
    "client_id",
    "grant_type",
    "code",
    "scope",
    # Token exchange (RFC 8693): DOT passes only the last value of a repeated parameter to oauthlib, so a
    # repeat is refused here.  ``audience`` may repeat in the RFC; Gatehouse issues for exactly one.
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "audience",
)


def oauth_error(error: str, description: str, status: int = 400, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def check_params(request) -> JsonResponse | None:
    for key, values in request.POST.lists():
        limit = PARAM_LIMITS.get(key, DEFAULT_LIMIT)
        if len(key) > 64 or any(len(v) > limit for v in values):
            return oauth_error("invalid_request", "A request parameter is too long.")
        if key in SINGLE_VALUED and len(values) > 1:
            return oauth_error("invalid_request", "A parameter that may appear once was repeated.")
    return None


def _as_json_error(response: HttpResponse) -> HttpResponse:
    """A DOT/Django failure that is not JSON yet (405, 404, an HTML page) becomes an OAuth error body."""
    if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
        return response
    if response.status_code == 405:
        return oauth_error(
            "invalid_request",
            "This endpoint does not answer that HTTP method.",
            405,
            {"Allow": response.get("Allow", "POST")},
        )
    if response.status_code >= 500:
        return oauth_error("server_error", "The server could not complete the request.", 500)
    return oauth_error("invalid_request", "The request was refused.", response.status_code)


def oauth_endpoint(name: str, *, audit_refusals: bool = False):
    """Wrap a view function: trace for the audit, bounded input, JSON errors, never an HTML 500."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            token = context.begin(name)
            try:
                if request.method == "POST":
                    refused = check_params(request)
                    if refused is not None:
                        return refused
                try:
                    response = view(request, *args, **kwargs)
                except Exception:
                    log.exception("OAuth endpoint %s failed", name)
                    return oauth_error("server_error", "The server could not complete the request.", 500)
                if audit_refusals and response.status_code >= 400:
                    _record_refusal(name, request, response)
                return _as_json_error(response)
            finally:
                context.end(token)

        return wrapped

    return decorate


def _record_refusal(name: str, request, response) -> None:
    trace = context.trace()
    if trace.recorded:
        return
    try:
        error = json.loads(response.content).get("error", "")
    except (ValueError, AttributeError):
        error = "invalid_request"
    parameters = {
        "endpoint": name,
        "grant_type": request.POST.get("grant_type", "")[:64],
        "reason": trace.reason,
    }
    if trace.client_id:
        parameters["client_id"] = trace.client_id
    try:
        record_refusal(
            action=Action.TOKEN_REFUSED,
            error=str(error)[:64],
            agent=trace.agent,
            tool_server=trace.tool_server,
            user=trace.user,
            audience=trace.audience,
            capabilities=trace.capabilities,
            parameters=parameters,
        )
    except Exception:  # the refusal stands; the failure to audit it is logged by record_refusal
        log.error("a token refusal could not be audited")


class TokenView(dot_views.TokenView):
    @method_decorator(sensitive_post_parameters("client_secret", "client_assertion"))
    def authorization_flow_token_response(self, request, *args, **kwargs):
        """DOT's, less its read-back of the token just stored: that query only feeds ``app_authorized``,
        so it runs only when something listens to that signal."""
        url, headers, body, status = self.create_token_response(request)
        if status == 200 and app_authorized.has_listeners():
            access_token = json.loads(body).get("access_token")
            if access_token is not None:
                checksum = hashlib.sha256(access_token.encode()).hexdigest()
                token = get_access_token_model().objects.get(token_checksum=checksum)
                app_authorized.send(sender=self, request=request, token=token)
        response = HttpResponse(content=body, status=status)
        for name, value in headers.items():
            response[name] = value
        return response

    @method_decorator(never_cache)
    def post(self, request, *args, **kwargs):
        from governance.oauth.server import GRANT_TYPES_SUPPORTED

        if request.POST.get("grant_type") not in GRANT_TYPES_SUPPORTED:
            context.note(reason="unsupported grant_type")
            return oauth_error(
                "unsupported_grant_type",
                "Use authorization_code, client_credentials, refresh_token or token exchange.",
            )
        response = self.authorization_flow_token_response(request)
        if response.status_code == 200 and request.META.get("HTTP_DPOP") and dpop_http.nonce_required():
            response["DPoP-Nonce"] = issue_nonce()  # RFC 9449 §8.2: keep the client's nonce fresh
        return response


class RevokeTokenView(dot_views.RevokeTokenView):
    pass


class AuthorizationView(dot_views.AuthorizationView):
    """DOT's page (template ``oauth2_provider/authorize.html``); the consent page subclasses it."""


_dot_token = TokenView.as_view()


def _token(request, *args, **kwargs):
    """A background agent's usual request on the direct path when it passes every check, else DOT's view."""
    if request.method == "POST":
        request.sensitive_post_parameters = ("client_secret", "client_assertion")  # as the decorator sets
        response = direct.issue(request)
        if response is not None:
            add_never_cache_headers(response)  # what never_cache adds to DOT's answers
            return response
    return _dot_token(request, *args, **kwargs)


token = csrf_exempt(oauth_endpoint("token", audit_refusals=True)(_token))
revoke = csrf_exempt(oauth_endpoint("revoke", audit_refusals=True)(RevokeTokenView.as_view()))
