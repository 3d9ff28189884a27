"""The oauthlib server Gatehouse runs: authorization code (PKCE S256 only), client credentials, refresh.

No implicit grant, no password grant, no device grant: they are not constructed, so no request can reach
them.  Access tokens are RFC 9068 JWTs from :func:`issuance.generate_access_token`, living as long as
:func:`issuance.expires_in` decides; refresh tokens stay opaque random strings.  DOT's token generator
settings are ignored on purpose: one access-token format, decided here.
"""

from __future__ import annotations

from oauthlib.oauth2.rfc6749.endpoints import (
    AuthorizationEndpoint,
    ResourceEndpoint,
    RevocationEndpoint,
    TokenEndpoint,
)
from oauthlib.oauth2.rfc6749.grant_types import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
)
from oauthlib.oauth2.rfc6749.tokens import random_token_generator

from governance.oauth import exchange, issuance
from governance.oauth.dpop_http import SenderConstrainedToken, check_token_request

GRANT_TYPES_SUPPORTED = ["authorization_code", "client_credentials", "refresh_token", exchange.GRANT_TYPE]


class GatehouseServer(AuthorizationEndpoint, TokenEndpoint, ResourceEndpoint, RevocationEndpoint):
    def __init__(self, request_validator, *args, **kwargs):
        # DPoP first (RFC 9449 §5): a refused proof costs no grant lookups and writes one event.
        hooks = {"post_token": [check_token_request, issuance.check_token]}
        self.auth_grant = AuthorizationCodeGrant(
            request_validator, post_auth=[issuance.check_authorization], **hooks
        )
        # RFC 9700 §2.1.1: S256 only.  Without a method oauthlib assumes "plain", which is now refused too.
        self.auth_grant._code_challenge_methods = {
            name: check for name, check in self.auth_grant._code_challenge_methods.items() if name == "S256"
        }
        self.credentials_grant = ClientCredentialsGrant(request_validator, **hooks)
        self.refresh_grant = RefreshTokenGrant(request_validator, **hooks)
        # RFC 8693 on-behalf-of; its rules live in the grant itself (server kwargs would not reach it).
        self.exchange_grant = exchange.TokenExchangeGrant(request_validator)
        self.bearer = SenderConstrainedToken(
            request_validator,
            token_generator=issuance.generate_access_token,
            expires_in=issuance.expires_in,
            refresh_token_generator=random_token_generator,
        )
        AuthorizationEndpoint.__init__(
            self,
            default_response_type="code",
            response_types={"code": self.auth_grant},
            default_token_type=self.bearer,
        )
        TokenEndpoint.__init__(
            self,
            default_grant_type="authorization_code",
            grant_types={
                "authorization_code": self.auth_grant,
                "client_credentials": self.credentials_grant,
                "refresh_token": self.refresh_grant,
                exchange.GRANT_TYPE: self.exchange_grant,
            },
            default_token_type=self.bearer,
        )
        ResourceEndpoint.__init__(self, default_token="Bearer", token_types={"Bearer": self.bearer})
        RevocationEndpoint.__init__(
            self, request_validator, supported_token_types=["access_token", "refresh_token"]
        )
