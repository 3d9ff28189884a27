"""The oauthlib server Gatehouse runs: the grant types named in ``GATEHOUSE_TOKEN_GRANT_TYPES``.

By default authorization code (PKCE S256 only), client credentials, refresh and token exchange
(:mod:`governance.oauth.grants`).  No implicit grant, no password grant, no device grant: they are not
constructed, so no request can reach them.  Access tokens are RFC 9068 JWTs signed by
:func:`grants.generate_access_token`, living as long as the issuance decided; refresh tokens stay opaque
random strings.  DOT's token generator settings are ignored on purpose: one access-token format.
"""

from __future__ import annotations

from oauthlib.oauth2.rfc6749.endpoints import (
    AuthorizationEndpoint,
    ResourceEndpoint,
    RevocationEndpoint,
    TokenEndpoint,
)
from oauthlib.oauth2.rfc6749.tokens import random_token_generator

from governance.oauth import grants


class GatehouseServer(AuthorizationEndpoint, TokenEndpoint, ResourceEndpoint, RevocationEndpoint):
    def __init__(self, request_validator, *args, **kwargs):
        # Each registered grant type gets its own handler, built with the validator (server kwargs would
        # not reach a grant's own rules: they live in the handler classes).
        handlers = {
            grant_type: grants.handler_class(path)(request_validator)
            for grant_type, path in grants.registered().items()
        }
        self.auth_grant = handlers.get("authorization_code")
        self.bearer = grants.SenderConstrainedToken(
            request_validator,
            token_generator=grants.generate_access_token,
            expires_in=grants.expires_in,
            refresh_token_generator=random_token_generator,
        )
        AuthorizationEndpoint.__init__(
            self,
            default_response_type="code",
            response_types={"code": self.auth_grant} if self.auth_grant is not None else {},
            default_token_type=self.bearer,
        )
        TokenEndpoint.__init__(
            self,
            default_grant_type="authorization_code",
            grant_types=handlers,
            default_token_type=self.bearer,
        )
        ResourceEndpoint.__init__(self, default_token="Bearer", token_types={"Bearer": self.bearer})
        RevocationEndpoint.__init__(
            self, request_validator, supported_token_types=["access_token", "refresh_token"]
        )
