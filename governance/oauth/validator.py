"""django-oauth-toolkit's validator, narrowed to Gatehouse's rules.  Few hooks; the rules live in
:mod:`governance.oauth.client_auth`, :mod:`governance.oauth.scoping` and :mod:`governance.oauth.issuance`."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from django.conf import settings
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.oauth2.rfc6749 import errors

from audit.actions import Action
from governance.models import Agent, ToolServer
from governance.models.agents import TokenEndpointAuthMethod
from governance.oauth import client_auth, context, dpop_http, issuance, issuance_queries, step_up
from governance.oauth.events import record_refusal
from governance.oauth.scoping import BrokerRefusal, parse_scope

MAX_CLIENT_ID_LENGTH = 255
SECRET_METHODS = {TokenEndpointAuthMethod.CLIENT_SECRET_BASIC, TokenEndpointAuthMethod.CLIENT_SECRET_POST}


def principal_for(application) -> Agent | ToolServer | None:
    """The agent or tool server behind a DOT application (None for a bare application)."""
    for attribute, model in (("agent", Agent), ("tool_server", ToolServer)):
        try:
            return getattr(application, attribute)
        except model.DoesNotExist:
            continue
    return None


def _param(request, name: str):
    return request._params.get(name)


def endpoint_audiences(request) -> set[str]:
    """``aud`` values a client assertion may carry: the issuer, or the endpoint it is sent to."""
    return client_auth.assertion_audiences(urlsplit(request.uri or "").path)


class GatehouseValidator(OAuth2Validator):
    # ---- loading and authenticating clients -------------------------------------------------------------
    def _load_application(self, client_id, request):
        if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH:
            return None
        if request.client is None:
            # One query for the application and the agent or tool server behind it (principal_for reads them);
            # DOT's loader below reuses it, or looks again when there is none.
            try:
                request.client = issuance_queries.load_client(client_id)
            except ValueError:  # e.g. a NUL byte PostgreSQL cannot represent: no such client
                return None
        return super()._load_application(client_id, request)

    def client_authentication_required(self, request, *args, **kwargs):
        if _param(request, "client_assertion") or _param(request, "client_assertion_type"):
            return True
        return super().client_authentication_required(request, *args, **kwargs)

    def authenticate_client(self, request, *args, **kwargs):
        if _param(request, "client_assertion") or _param(request, "client_assertion_type"):
            return self._authenticate_assertion(request)
        basic = self._extract_basic_auth(request) is not None
        if not super().authenticate_client(request, *args, **kwargs):
            context.note(client_id=request.client_id, reason="client secret did not verify")
            return False
        principal = self._principal(request)
        method = (
            TokenEndpointAuthMethod.CLIENT_SECRET_BASIC
            if basic
            else TokenEndpointAuthMethod.CLIENT_SECRET_POST
        )
        if principal is None or principal.token_endpoint_auth_method != method:
            context.note(reason=f"{method} is not this client's authentication method")
            return False
        return self._usable(principal)

    def _authenticate_assertion(self, request) -> bool:
        if _param(request, "client_assertion_type") != client_auth.ASSERTION_TYPE:
            context.note(reason="unsupported client_assertion_type")
            return False
        assertion = _param(request, "client_assertion")
        client_id = client_auth.unverified_issuer(assertion)
        claimed = _param(request, "client_id")
        if client_id is None or (claimed and claimed != client_id):
            context.note(reason="the assertion does not name this client")
            return False
        request.client = None
        if self._load_application(client_id, request) is None:
            context.note(reason="unknown client")
            return False
        principal = self._principal(request)
        if (
            principal is None
            or principal.token_endpoint_auth_method != TokenEndpointAuthMethod.PRIVATE_KEY_JWT
        ):
            context.note(reason="private_key_jwt is not this client's authentication method")
            return False
        if not self._usable(principal):
            return False
        try:
            client_auth.verify_assertion(
                assertion,
                client_id=client_id,
                jwks=principal.jwks,
                jwks_uri=principal.jwks_uri,
                audiences=endpoint_audiences(request),
            )
        except client_auth.AssertionRejected as exc:
            context.note(reason=exc.reason)
            return False
        request.client_id = client_id
        return True

    def authenticate_client_id(self, client_id, request, *args, **kwargs):
        """A public client (PKCE only): allowed just for agents registered with method ``none``."""
        if self._load_application(client_id, request) is None:
            context.note(reason="unknown client")
            return False
        principal = self._principal(request)
        if (
            not isinstance(principal, Agent)
            or principal.token_endpoint_auth_method != TokenEndpointAuthMethod.NONE
        ):
            context.note(reason="this client must authenticate")
            return False
        return self._usable(principal) and super().authenticate_client_id(client_id, request, *args, **kwargs)

    def validate_client_id(self, client_id, request, *args, **kwargs):
        """Authorization endpoint: only an active agent may start a flow."""
        if self._load_application(client_id, request) is None:
            return False
        principal = self._principal(request)
        return isinstance(principal, Agent) and self._usable(principal)

    def _principal(self, request):
        principal = principal_for(request.client) if request.client is not None else None
        if isinstance(principal, Agent):
            context.note(agent=principal, client_id=request.client.client_id)
        elif isinstance(principal, ToolServer):
            context.note(tool_server=principal, client_id=request.client.client_id)
        return principal

    def _usable(self, principal) -> bool:
        if isinstance(principal, Agent) and not principal.is_active:
            context.note(reason=f"agent is {principal.status}")
            return False
        return True

    # ---- scopes, redirect URIs, grants ------------------------------------------------------------------
    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        """Shape only; whether grants cover the scopes is decided in :mod:`issuance` (with an audit event)."""
        scopes = [s for s in scopes if s]
        if not scopes:  # an empty scope parameter counts as none: the agent's configured minimum
            scopes = list(self.get_default_scopes(client_id, request))
            request.scopes = scopes
        try:
            parse_scope(" ".join(scopes))
        except BrokerRefusal:
            return False
        return bool(scopes) and all(scopes)

    def validate_redirect_uri(self, client_id, redirect_uri, request, *args, **kwargs):
        parts = urlsplit(redirect_uri or "")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1") and not settings.DEBUG:
            return False  # http only for RFC 8252 loopback redirects outside development
        return super().validate_redirect_uri(client_id, redirect_uri, request, *args, **kwargs)

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs):
        from governance.oauth.exchange import GRANT_TYPE as TOKEN_EXCHANGE

        if grant_type == TOKEN_EXCHANGE:
            # DOT's Application cannot name this grant (47 characters, its field holds 44, and its mapping
            # asserts): any authenticated agent may ask; the exchange grant decides whether it may act.
            return isinstance(principal_for(client), Agent)
        if grant_type not in ("authorization_code", "client_credentials", "refresh_token"):
            return False
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        valid = super().validate_code(client_id, code, client, request, *args, **kwargs)
        if valid:
            from oauth2_provider.models import get_grant_model

            request.gatehouse_code_resource = (
                get_grant_model()
                .objects.filter(code=code, application=client)
                .values_list("resource", flat=True)
            ).first() or []
        else:
            context.note(reason="unknown, used or expired authorization code")
        return valid

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        valid = super().validate_refresh_token(refresh_token, client, request, *args, **kwargs)
        if not valid:
            checksum = hashlib.sha256(refresh_token.encode()).hexdigest()
            reused = (
                get_refresh_token_model()
                .objects.filter(token_checksum=checksum, application=client, revoked__isnull=False)
                .select_related("user")
                .first()
            )
            if reused is not None:
                agent = principal_for(client) if isinstance(principal_for(client), Agent) else None
                record_refusal(
                    action=Action.TOKEN_REUSE_DETECTED,
                    error="invalid_grant",
                    agent=agent,
                    user=reused.user,
                    audience=" ".join(reused.resource or []),
                    parameters={"token_family": str(reused.token_family or ""), "family_revoked": True},
                )
                context.note(reason="refresh token reused; its family is revoked")
            else:
                context.note(reason="unknown or expired refresh token")
        return valid

    # ---- storing tokens ---------------------------------------------------------------------------------
    def _save_bearer_token(self, token, request, *args, **kwargs):
        super()._save_bearer_token(token, request, *args, **kwargs)
        issuance.record_issue(token, request)

    def _create_access_token(self, expires, request, token, source_refresh_token=None):
        issued = getattr(request, "gatehouse", None)
        if issued is not None:
            expires = issued.expires_at
        access_token = super()._create_access_token(expires, request, token, source_refresh_token)
        if issued is not None:
            issuance.create_record(access_token=access_token, issued=issued, request=request)
        return access_token

    def _create_authorization_code(self, request, code, expires=None):
        # RFC 9449 §10: the code keeps the request's dpop_jkt in Grant.claims (OpenID Connect is off),
        # and the acr/auth_time of the session that allowed (step-up); never the form's own "claims".
        request.claims = {**(dpop_http.code_claims(request) or {}), **step_up.code_claims(request)} or None
        return super()._create_authorization_code(request, code, expires)

    def _create_refresh_token(self, request, refresh_token_code, access_token, previous_refresh_token):
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        dpop_http.bind_refresh_family(
            refresh_token=refresh_token, previous=previous_refresh_token, request=request
        )
        step_up.remember_family(refresh_token=refresh_token, previous=previous_refresh_token, request=request)
        return refresh_token

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs):
        issuance.revoke(token, request)

    # ---- OIDC stays off: a JWT-shaped bearer token is never an ID token ----------------------------------
    def validate_jwt_bearer_token(self, token, scopes, request):
        return self.validate_bearer_token(token, scopes, request)

    def validate_id_token(self, token, scopes, request):
        return False


__all__ = ["GatehouseValidator", "get_access_token_model", "principal_for", "errors"]
