"""OAuth endpoints: DOT views wrapped so every failure is RFC 6749 §5.2 JSON and every refusal is audited
(:func:`governance.oauth.endpoint.oauth_endpoint`)."""

from __future__ import annotations

import json

from django.http import HttpResponse
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from oauth2_provider import views as dot_views
from oauth2_provider.models import get_access_token_model
from oauth2_provider.signals import app_authorized

from governance.conf import gatehouse_settings
from governance.oauth import direct, state, token_dpop
from governance.oauth.dpop import issue_nonce
from governance.oauth.endpoint import oauth_endpoint, oauth_error
from governance.oauth.tokens import checksum


class TokenView(dot_views.TokenView):
    @method_decorator(sensitive_post_parameters("client_secret", "client_assertion"))
    def authorization_flow_token_response(self, request, *args, **kwargs):
        """DOT's, less its read-back of the token just stored: that query only feeds ``app_authorized``,
        so it runs only when something listens to that signal."""
        url, headers, body, status = self.create_token_response(request)
        if status == 200 and app_authorized.has_listeners():
            access_token = json.loads(body).get("access_token")
            if access_token is not None:
                token = get_access_token_model().objects.get(token_checksum=checksum(access_token))
                app_authorized.send(sender=self, request=request, token=token)
        response = HttpResponse(content=body, status=status)
        for name, value in headers.items():
            response[name] = value
        return response

    @method_decorator(never_cache)
    def post(self, request, *args, **kwargs):
        if request.POST.get("grant_type") not in gatehouse_settings.TOKEN_GRANT_TYPES:
            state.current().reason = "unsupported grant_type"
            return oauth_error(
                "unsupported_grant_type",
                "Use authorization_code, client_credentials, refresh_token or token exchange.",
            )
        response = self.authorization_flow_token_response(request)
        if response.status_code == 200 and request.META.get("HTTP_DPOP") and token_dpop.nonce_required():
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
