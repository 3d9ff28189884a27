"""django-oauth-toolkit's validator, narrowed to Gatehouse's rules.  Few hooks; the rules live in
:mod:`governance.oauth.client_auth`, :mod:`governance.oauth.scoping` and :mod:`governance.oauth.issuance`.
What a hook learns for the audit goes on the request's :class:`~governance.oauth.state.BrokerRequest`."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from oauth2_provider.models import get_grant_model, get_refresh_token_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request as OauthlibRequest

from audit import services as audit
from audit.actions import Action
from governance.conf import gatehouse_settings
from governance.models import Agent, ToolServer
from governance.models.agents import TokenEndpointAuthMethod
from governance.oauth import client_auth, issuance, issuance_queries, step_up, token_dpop
from governance.oauth.grants import refused
from governance.oauth.params import MAX_CLIENT_ID_LENGTH
from governance.oauth.principals import agent_for, principal_for
from governance.oauth.refusals import Refusal, RefusalEvent
from governance.oauth.scoping import parse_scope
from governance.oauth.state import current
from governance.oauth.tokens import checksum, remember_redeemed_code
from governance.services.tokens import code_tokens_revoke, token_revoke

SECRET_METHODS = {TokenEndpointAuthMethod.CLIENT_SECRET_BASIC, TokenEndpointAuthMethod.CLIENT_SECRET_POST}
# DOT's Application names these grant types itself; any other registered one is an extension grant.
DOT_GRANT_TYPES = ("authorization_code", "client_credentials", "refresh_token")


def _param(request, name: str):
    return request._params.get(name)


def endpoint_audiences(request) -> set[str]:
    """``aud`` values a client assertion may carry: the issuer, or the endpoint it is sent to."""
    return client_auth.assertion_audiences(urlsplit(request.uri or "").path)


def _lock_refresh_token(request) -> None:
    """Rotation is atomic: lock the presented refresh token's row (``SELECT ... FOR UPDATE``, inside DOT's
    save transaction) and refuse unless it is still unrevoked.  Of two parallel refreshes with one token,
    the first rotates it; the second, validated before that commit, waits here and gets ``invalid_grant``
    without touching the family: its token was live when presented, so this is a lost race, not reuse
    (RFC 9700 §4.14.2).  A later presentation of the rotated token is reuse and revokes the family."""
    presented = getattr(request, "refresh_token_instance", None)
    if presented is None:
        return
    live = (
        get_refresh_token_model()
        .objects.select_for_update()
        .filter(pk=presented.pk, revoked__isnull=True)
        .values_list("pk", flat=True)
        .first()
    )
    if live is None:
        raise refused(
            Refusal(
                "invalid_grant",
                "The refresh token is invalid, expired or revoked.",
                reason="refresh token rotated by a concurrent request",
            ),
            request,
        )


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
            state = current()
            state.about(client_id=request.client_id or "")
            state.reason = "client secret did not verify"
            return False
        principal = self._principal(request)
        method = (
            TokenEndpointAuthMethod.CLIENT_SECRET_BASIC
            if basic
            else TokenEndpointAuthMethod.CLIENT_SECRET_POST
        )
        if principal is None or principal.token_endpoint_auth_method != method:
            current().reason = f"{method} is not this client's authentication method"
            return False
        return self._usable(principal)

    def _authenticate_assertion(self, request) -> bool:
        if _param(request, "client_assertion_type") != client_auth.ASSERTION_TYPE:
            current().reason = "unsupported client_assertion_type"
            return False
        assertion = _param(request, "client_assertion")
        client_id = client_auth.unverified_issuer(assertion)
        claimed = _param(request, "client_id")
        if client_id is None or (claimed and claimed != client_id):
            current().reason = "the assertion does not name this client"
            return False
        request.client = None
        if self._load_application(client_id, request) is None:
            current().reason = "unknown client"
            return False
        principal = self._principal(request)
        if (
            principal is None
            or principal.token_endpoint_auth_method != TokenEndpointAuthMethod.PRIVATE_KEY_JWT
        ):
            current().reason = "private_key_jwt is not this client's authentication method"
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
            current().reason = exc.reason
            return False
        request.client_id = client_id
        return True

    def authenticate_client_id(self, client_id, request, *args, **kwargs):
        """A public client (PKCE only): allowed just for agents registered with method ``none``."""
        if self._load_application(client_id, request) is None:
            current().reason = "unknown client"
            return False
        principal = self._principal(request)
        if (
            not isinstance(principal, Agent)
            or principal.token_endpoint_auth_method != TokenEndpointAuthMethod.NONE
        ):
            current().reason = "this client must authenticate"
            return False
        return self._usable(principal) and super().authenticate_client_id(client_id, request, *args, **kwargs)

    def validate_client_id(self, client_id, request, *args, **kwargs):
        """Authorization endpoint: only an active agent may start a flow."""
        if self._load_application(client_id, request) is None:
            return False
        principal = self._principal(request)
        return isinstance(principal, Agent) and self._usable(principal)

    def _principal(self, request):
        principal = principal_for(request.client)
        if isinstance(principal, Agent):
            current().about(agent=principal, client_id=request.client.client_id)
        elif isinstance(principal, ToolServer):
            current().about(tool_server=principal, client_id=request.client.client_id)
        return principal

    def _usable(self, principal) -> bool:
        if isinstance(principal, Agent) and not principal.is_active:
            current().reason = f"agent is {principal.status}"
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
        except Refusal:
            return False
        return bool(scopes) and all(scopes)

    def validate_redirect_uri(self, client_id, redirect_uri, request, *args, **kwargs):
        parts = urlsplit(redirect_uri or "")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1") and not settings.DEBUG:
            return False  # http only for RFC 8252 loopback redirects outside development
        return super().validate_redirect_uri(client_id, redirect_uri, request, *args, **kwargs)

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs):
        if grant_type in DOT_GRANT_TYPES:
            return super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)
        if grant_type in gatehouse_settings.TOKEN_GRANT_TYPES:
            # An extension grant (token exchange, CIBA...): DOT's Application cannot name it (its field holds
            # 44 characters, the token-exchange URN has 47, and its mapping asserts), so any authenticated
            # agent may ask and the grant's own rules decide.
            return agent_for(client) is not None
        return False

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        valid = super().validate_code(client_id, code, client, request, *args, **kwargs)
        if valid:
            current().code_resource = (
                get_grant_model()
                .objects.filter(code=code, application=client)
                .values_list("resource", flat=True)
            ).first() or []
        else:
            current().reason = "unknown, used or expired authorization code"
            if code_tokens_revoke(actor=agent_for(client), code=code):
                current().reason = "authorization code replayed; the tokens it minted are revoked"
        return valid

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        valid = super().validate_refresh_token(refresh_token, client, request, *args, **kwargs)
        if not valid:
            reused = (
                get_refresh_token_model()
                .objects.filter(
                    token_checksum=checksum(refresh_token), application=client, revoked__isnull=False
                )
                .select_related("user")
                .first()
            )
            if reused is not None:
                event = RefusalEvent(
                    action=Action.TOKEN_REUSE_DETECTED,
                    error="invalid_grant",
                    agent=agent_for(client),
                    user=reused.user,
                    audience=" ".join(reused.resource or []),
                    parameters={"token_family": str(reused.token_family or ""), "family_revoked": True},
                )
                current().refuse(event, reason="refresh token reused; its family is revoked")
            else:
                current().reason = "unknown or expired refresh token"
        return valid

    # ---- storing tokens ---------------------------------------------------------------------------------
    def _save_bearer_token(self, token, request, *args, **kwargs):
        if request.grant_type == "refresh_token":
            _lock_refresh_token(request)
        super()._save_bearer_token(token, request, *args, **kwargs)
        if request.grant_type == "authorization_code" and getattr(request, "code", None):
            remember_redeemed_code(
                code=request.code,
                access_token=token["access_token"],
                refresh_token=token.get("refresh_token"),
            )
        issued = current().issued
        if issued is not None:  # inside DOT's save transaction: one event, never the token's value
            audit.record(**issuance.issue_event(issued, refresh_token_issued="refresh_token" in token))

    def _create_access_token(self, expires, request, token, source_refresh_token=None):
        issued = current().issued
        if issued is not None:
            expires = issued.expires_at
        access_token = super()._create_access_token(expires, request, token, source_refresh_token)
        if issued is not None:
            # The ORM's INSERT, its statement built once.
            issuance_queries.insert(issuance.token_record(access_token=access_token, issued=issued))
        return access_token

    def _create_authorization_code(self, request, code, expires=None):
        # RFC 9449 §10: the code keeps the request's dpop_jkt in Grant.claims (OpenID Connect is off),
        # and the acr/auth_time of the session that allowed (step-up); never the form's own "claims".
        try:
            dpop = token_dpop.code_claims(getattr(request, "dpop_jkt", None)) or {}
        except Refusal as refusal:
            raise refused(refusal, request) from None
        session = step_up.code_claims(getattr(request, step_up.CREDENTIAL, None))
        request.claims = {**dpop, **session} or None
        return super()._create_authorization_code(request, code, expires)

    def _create_refresh_token(self, request, refresh_token_code, access_token, previous_refresh_token):
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        issued = current().issued
        token_dpop.bind_refresh_family(
            refresh_token=refresh_token, previous=previous_refresh_token, issued=issued
        )
        step_up.remember_family(refresh_token=refresh_token, previous=previous_refresh_token, issued=issued)
        return refresh_token

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs):
        token_revoke(
            actor=agent_for(request.client),
            application=request.client,
            token=token,
            token_type_hint=token_type_hint,
        )

    # ---- OIDC stays off: a JWT-shaped bearer token is never an ID token ----------------------------------
    def validate_jwt_bearer_token(self, token, scopes, request):
        return self.validate_bearer_token(token, scopes, request)

    def validate_id_token(self, token, scopes, request):
        return False


def authenticate_request_client(request, body=()) -> Agent | ToolServer | None:
    """The agent or tool server whose client credentials came with a Django request outside the token
    endpoint (introspection, the decision API, the approvals API), authenticated exactly as the token
    endpoint authenticates clients: the ``Authorization`` header, or the credentials in ``body`` (pairs
    or a mapping).  Only the validator runs: no oauthlib server is built for a credential check."""
    headers = {"HTTP_AUTHORIZATION": request.META.get("HTTP_AUTHORIZATION", "")}
    if "HTTP_AUTHORIZATION" in request.META:
        headers["Authorization"] = request.META["HTTP_AUTHORIZATION"]
    if "CONTENT_TYPE" in request.META:
        headers["Content-Type"] = request.META["CONTENT_TYPE"]
    oauth_request = OauthlibRequest(request.build_absolute_uri(), request.method, body, headers)
    if not oauth2_settings.OAUTH2_VALIDATOR_CLASS().authenticate_client(oauth_request):
        return None
    return principal_for(oauth_request.client)


__all__ = ["GatehouseValidator", "authenticate_request_client"]
