"""The grant handlers oauthlib dispatches token requests to, adapted to Gatehouse's rules.

Thin adapters: each hook reads what oauthlib validated from its request object, calls the rules
(:func:`issuance.decide`, :func:`exchange.decide`, :mod:`token_dpop`) and turns a :class:`Refusal` into an
oauthlib error (:func:`refused`, the one mapping), naming the refusal's audit event on the request's
:class:`~governance.oauth.state.BrokerRequest`; the HTTP edge records it.  The token endpoint accepts the
grant types named in the ``GATEHOUSE_TOKEN_GRANT_TYPES`` setting (:func:`registered`): another app adds
one by naming its own handler class there (docs/oauth.md, "Adding a grant type").
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.utils.module_loading import import_string
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749 import grant_types as oauthlib_grants
from oauthlib.oauth2.rfc6749.tokens import BearerToken

from governance.conf import gatehouse_settings
from governance.models import User
from governance.oauth import exchange, issuance, step_up, token_dpop
from governance.oauth.dpop import DPoPError
from governance.oauth.params import REPEATED, SINGLE_VALUED
from governance.oauth.principals import agent_for
from governance.oauth.refusals import Refusal
from governance.oauth.state import current
from governance.services.tokens import refresh_family_revoke


class RefusedError(errors.OAuth2Error):
    """A :class:`Refusal` as oauthlib's error: its code, fixed description, status, members and headers."""

    def __init__(self, refusal: Refusal, request: Any = None):
        self.error = refusal.error
        self.status_code = refusal.status
        self._members = dict(refusal.members)
        self._extra_headers = dict(refusal.headers)
        super().__init__(description=refusal.description, request=request)

    @property
    def twotuples(self):
        pairs = super().twotuples
        pairs.extend(self._members.items())
        return pairs

    @property
    def headers(self) -> dict[str, str]:
        # Raised from a storage hook (after oauthlib built its answer), DOT answers with these headers only.
        json_answer = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}
        return {**json_answer, **super().headers, **self._extra_headers}


def refused(refusal: Refusal, request: Any) -> RefusedError:
    """The oauthlib error for ``refusal``; its reason and audit event go on the request's state."""
    state = current()
    if refusal.event is not None:
        state.refuse(refusal.event, reason=refusal.reason)
    else:
        state.reason = refusal.reason
    if refusal.details.get("audience"):
        state.audience = refusal.details["audience"]
    return RefusedError(refusal, request=request)


def dpop_headers(request: Any) -> list[str]:
    """Every value of the request's ``DPoP`` header (DOT copies Django's META into oauthlib's headers)."""
    value = (getattr(request, "headers", None) or {}).get("HTTP_DPOP")
    return [] if value is None else [value]


def body_values(request: Any, name: str) -> list[str]:
    return [value for key, value in (request.decoded_body or []) if key == name]


def _resources(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [v for v in value if isinstance(v, str)]


def _refresh_family(request: Any):
    return getattr(getattr(request, "refresh_token_instance", None), "token_family", None)


# ---- hooks ------------------------------------------------------------------------------------------------
def check_authorization(request) -> dict:
    """post_auth: refuse early what no consent could make valid."""
    try:
        agent = issuance.requesting_agent(request.client)
        resources = _resources(request.resource)
        if not resources and request.uri:
            resources = [v for k, v in parse_qsl(urlsplit(request.uri).query) if k == "resource"]
        user = request.user if isinstance(request.user, User) else None
        server = issuance.authorize(
            agent=agent,
            user=user,
            resources=resources,
            scopes=request.scopes or [],
            dpop_jkt=getattr(request, "dpop_jkt", None),
        )
    except Refusal as refusal:
        raise refused(refusal, request) from None
    request.resource = [server.audience]
    return {"resource": [server.audience]}


def check_proof(request) -> None:
    """post_token, first (RFC 9449 §5): the proof, the grant's binding, the agent's rule; a refused proof
    costs no grant lookups."""
    agent = agent_for(request.client) if getattr(request, "client", None) is not None else None
    binding, expected = token_dpop.grant_binding(
        request.grant_type, code_claims=request.claims, refresh_family=_refresh_family(request)
    )
    try:
        proof = token_dpop.token_proof(
            current(), headers=dpop_headers(request), method=request.http_method, expected_jkt=expected
        )
        token_dpop.require(proof, expected_jkt=expected, agent=agent)
    except DPoPError as exc:
        refusal = token_dpop.refusal(
            exc,
            grant_type=request.grant_type,
            agent=agent,
            user=request.user,
            binding=token_dpop.binding_reason(binding=binding, expected_jkt=expected, agent=agent),
            token_family=_refresh_family(request),
        )
        raise refused(refusal, request) from None


def check_token(request) -> None:
    """post_token: the one issuance decision; nothing is issued unless all its rules hold."""
    state = current()
    grant_type = request.grant_type
    try:
        agent = issuance.requesting_agent(request.client)
        if grant_type == "client_credentials":
            user, allowed_resources = None, None
        elif grant_type == "authorization_code":
            user, allowed_resources = request.user, state.code_resource
        else:
            user, allowed_resources = request.user, list(request.refresh_token_instance.resource or [])
        state.user = user
        requested = list(request.scopes or [])
        state.capabilities = requested
        issued = issuance.decide(
            agent=agent,
            grant_type=grant_type,
            requested=requested,
            resources=body_values(request, "resource"),
            user=user,
            allowed_resources=allowed_resources,
            proof_jkt=token_dpop.bound_jkt(state),
            authentication=step_up.carried(
                grant_type, code_claims=request.claims, refresh_family=_refresh_family(request)
            ),
            check_age=grant_type == "refresh_token",
        )
    except Refusal as refusal:
        if refusal.details.get("lapsed"):
            refresh_family_revoke(
                actor=agent_for(request.client),
                refresh_token=request.refresh_token_instance,
                reason="a grant behind this refresh token has lapsed",
            )
        raise refused(refusal, request) from None
    state.audience = issued.tool_server.audience
    state.issued = issued
    request.scopes = issued.decision.allowed
    request.resource = [issued.tool_server.audience]


TOKEN_HOOKS = {"post_token": [check_proof, check_token]}


# ---- the grant handlers -----------------------------------------------------------------------------------
class AuthorizationCodeGrant(oauthlib_grants.AuthorizationCodeGrant):
    """Authorization code with PKCE S256 only (RFC 9700 §2.1.1; without a method oauthlib assumes "plain",
    which is refused too)."""

    def __init__(self, request_validator=None, **kwargs):
        super().__init__(request_validator, post_auth=[check_authorization], **TOKEN_HOOKS, **kwargs)
        self._code_challenge_methods = {
            name: check for name, check in self._code_challenge_methods.items() if name == "S256"
        }


class ClientCredentialsGrant(oauthlib_grants.ClientCredentialsGrant):
    def __init__(self, request_validator=None, **kwargs):
        super().__init__(request_validator, **TOKEN_HOOKS, **kwargs)


class RefreshTokenGrant(oauthlib_grants.RefreshTokenGrant):
    def __init__(self, request_validator=None, **kwargs):
        super().__init__(request_validator, **TOKEN_HOOKS, **kwargs)


class TokenExchangeGrant(oauthlib_grants.base.GrantTypeBase):
    """RFC 8693 on-behalf-of (``urn:ietf:params:oauth:grant-type:token-exchange``); the rules are
    :func:`exchange.decide`."""

    def create_token_response(self, request, token_handler):
        headers = self._get_default_headers()
        try:
            self.validate_token_request(request)
        except errors.OAuth2Error as exc:
            headers.update(exc.headers)
            return headers, exc.json, exc.status_code
        token = token_handler.create_token(request, refresh_token=False)
        token.pop("refresh_token", None)
        token["issued_token_type"] = (
            exchange.ACCESS_TOKEN_TYPE
        )  # token_type (Bearer or DPoP) is the token handler's
        self.request_validator.save_token(token, request)
        return headers, json.dumps(token), 200

    def validate_token_request(self, request) -> None:
        if request.grant_type != exchange.GRANT_TYPE:
            raise errors.UnsupportedGrantTypeError(request=request)
        state = current()
        # A backstop: the edge already refuses repeats, which DOT would otherwise reduce to the last value.
        if any(name in request.duplicate_params for name in SINGLE_VALUED):
            raise refused(Refusal("invalid_request", REPEATED, reason="repeated parameter"), request)
        # The actor always authenticates itself (private_key_jwt, or its configured secret method).
        if not self.request_validator.authenticate_client(request):
            state.reason = state.reason or "client authentication failed"
            raise errors.InvalidClientError(request=request)
        request.client_id = request.client_id or request.client.client_id
        if not self.request_validator.validate_grant_type(
            request.client_id, request.grant_type, request.client, request
        ):
            raise errors.UnauthorizedClientError(request=request)
        try:
            actor = issuance.requesting_agent(request.client)
            issued = exchange.decide(
                state,
                actor=actor,
                body=list(request.decoded_body or []),
                headers=dpop_headers(request),
                method=request.http_method,
            )
        except Refusal as refusal:
            raise refused(refusal, request) from None
        state.issued = issued
        request.user = issued.user
        request.scopes = issued.decision.allowed
        request.resource = [issued.tool_server.audience]


# ---- the token type --------------------------------------------------------------------------------------
class SenderConstrainedToken(BearerToken):
    """oauthlib's token type, answering ``token_type: DPoP`` when the issued token carries ``cnf.jkt``."""

    def create_token(self, request, refresh_token=False, **kwargs):
        token = super().create_token(request, refresh_token=refresh_token, **kwargs)
        issued = current().issued
        if issued is not None and issued.cnf_jkt:
            token["token_type"] = "DPoP"
        return token


def expires_in(request) -> int:
    issued = current().issued
    return issued.decision.lifetime_seconds if issued is not None else 0


def generate_access_token(request) -> str:
    return issuance.sign(current().issued)


# ---- the registry ----------------------------------------------------------------------------------------
def registered() -> dict[str, str]:
    """grant_type -> dotted path of its handler class, as the ``GATEHOUSE_TOKEN_GRANT_TYPES`` setting says."""
    return dict(gatehouse_settings.TOKEN_GRANT_TYPES)


@lru_cache(maxsize=32)
def handler_class(path: str) -> type:
    return import_string(path)


__all__ = [
    "AuthorizationCodeGrant",
    "ClientCredentialsGrant",
    "RefreshTokenGrant",
    "RefusedError",
    "SenderConstrainedToken",
    "TokenExchangeGrant",
    "refused",
]
